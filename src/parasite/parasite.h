// Running the parasite blob inside a stopped process of a SeizedTree, to
// collect the state only the process itself can read (see README.md for the
// sequence and the self-healing design).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "base/remote_ptr.h"
#include "image/checkpoint.h"
#include "parasite/blob_loader.h"
#include "parasite/client.h"
#include "parasite/thread_guard.h"
#include "tracer/registers.h"
#include "tracer/remote.h"
#include "tracer/task.h"

namespace snap::parasite {

// What the parasite found in one process; applied to image::Process by
// apply_parasite_state().
struct ParasiteState {
  std::vector<image::SigAction> sigactions;
  std::vector<std::pair<pid_t, snap_parasite_thread_state>> threads;
  std::array<image::TimerValue, 3> itimers{};
  std::vector<image::PosixTimer> posix_timers;
  snap_parasite_misc misc{};
  std::vector<std::pair<int, std::vector<uint8_t>>> pipes;  // read-end fd, bytes
};

// The blob mapped into a process: mapped by the constructor (remote mmap
// through the leader), unmapped by the destructor, which also hands every
// thread back with its original registers and signal mask.
class Parasite {
 public:
  // `mappings`: the process's, read since it stopped, if the caller has them.
  explicit Parasite(SeizedTree::Proc& proc, const std::vector<image::Mapping>* mappings = nullptr);
  ~Parasite();
  Parasite(const Parasite&) = delete;
  Parasite& operator=(const Parasite&) = delete;

  using ThreadStates = std::vector<std::pair<pid_t, snap_parasite_thread_state>>;
  // Runs the command loop in the leader; `session` talks to it (on another
  // snap thread, while this one drives the leader with ptrace). Meanwhile
  // every other thread of the process runs snap_parasite_thread_entry (see
  // run_thread_entries); what each reported is returned, by tid.
  ThreadStates run_service(const std::function<void(ParasiteClient&)>& session);

  remote_addr base() const { return blob_->base(); }

 private:
  void unmap() noexcept;
  // Whether `ip` is in what snap mapped for the blob (its image and slots).
  bool in_blob(remote_addr ip) const {
    return ip.as_int() >= blob_->base().as_int() && ip.as_int() < blob_->base().as_int() + mapped_;
  }
  // snap_parasite_thread_entry in every thread but the leader, all at once
  // (each on a slot of its own after the blob), running free: no stop until
  // each has reported and waits on `wait_fd` (the service's socket in the
  // job, so that snap's death sends them back); then each is stopped there
  // and put back. `between` runs while snap waits for them; false from it
  // ends the wait (and the call) with an error.
  ThreadStates run_thread_entries(int wait_fd, const std::function<bool()>& between);
  // The fd of the socket the leader's blob connected, in the job.
  int service_socket(const std::function<bool()>& between);
  SeizedTree::Proc& proc_;
  std::optional<remote_addr> gadget_;
  std::optional<remote_addr> ret_site_;
  std::vector<std::unique_ptr<ThreadGuard>> guards_;  // [0] = leader
  std::optional<LoadedBlob> blob_;
  uint64_t mapped_ = 0;   // bytes mapped at the blob's base: its image, then the thread slots
  remote_addr slots_;     // slot i-1 for thread i
  int leader_sock_ = -1;  // the blob's socket in the job, when snap must close it
};

// The whole step of `snap dump`: inject, collect, cure. `fds` is the
// process's fd table (to find pipe read ends); `mappings` its mappings,
// read while it was stopped (where the injection looks for code it needs).
ParasiteState run_parasite(SeizedTree::Proc& proc, const std::vector<image::FileDesc>& fds,
                           const std::vector<image::Mapping>* mappings = nullptr);
// Copies the state into the process (threads matched by tid).
void apply_parasite_state(const ParasiteState& s, image::Process& out);

// Appends "MONOTONIC_SECONDS PID PHASE" to the file named by $SNAP_PHASE_LOG,
// if set (for the fault tests: they kill snap at chosen instants and want
// to know where it was); with $SNAP_PHASE_PAUSE naming the phase too, snap
// then sleeps 0.3 s there, so that a test can kill it in that state.
void phase(pid_t pid, const char* what);
// /proc/PID/timers: the POSIX timers' ids, clocks and notification.
std::vector<image::PosixTimer> read_posix_timers(pid_t pid);

}  // namespace snap::parasite
