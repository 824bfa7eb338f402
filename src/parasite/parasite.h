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
#include "tracer/registers.h"
#include "tracer/remote.h"
#include "tracer/task.h"

namespace snap::parasite {

// One thread held in a state from which it gets back to its own context by
// itself if snap dies: a complete rt_sigreturn frame for its original
// context is written below its red zone, and while the guard is "parked" the
// thread's registers point at an rt_sigreturn gadget with rsp at that frame.
// The destructor gives the thread its original registers and signal mask.
class ThreadGuard {
 public:
  // `sigreturn_gadget`: address of `mov $15, %eax/%rax; syscall` in the
  // target, or nullopt (then an orphaned thread is not protected; see README).
  ThreadGuard(Task& task, std::optional<remote_addr> sigreturn_gadget);
  ~ThreadGuard();
  ThreadGuard(const ThreadGuard&) = delete;
  ThreadGuard& operator=(const ThreadGuard&) = delete;

  // All signals blocked, registers at the gadget (or original ones without).
  void park();
  // Original signal mask, then original registers.
  void release();

  Task& task() { return task_; }
  // rsp for an rt_sigreturn to the original context (frame + 8).
  remote_addr sigreturn_sp() const { return frame_ + 8; }
  // The frame's start: its first word holds the gadget address, so a `ret`
  // executed with rsp here ends in rt_sigreturn.
  remote_addr frame() const { return frame_; }
  bool protected_by_frame() const { return gadget_.has_value(); }
  const Registers& original_regs() const { return clean_; }  // restart applied

  // Runs the thread from `entry` (any code that ends in rt_sigreturn on this
  // guard's frame) until that rt_sigreturn has completed, then checks that
  // the registers are the original ones. Throws if the thread stops in any
  // other way (fault, trap); the thread is then put back by hand.
  void run_until_sigreturn(remote_addr entry);
  // The same in two halves, so that several threads run at once: start()
  // sets the thread off at `entry` (rdi = `arg`; rsp = `sp`, or left as it
  // is when null); wait_and_step() waits for the thread's next stop and
  // says whether that rt_sigreturn has completed (the checks above done),
  // else lets it run on to its next stop.
  void start(remote_addr entry, uint64_t arg = 0, remote_addr sp = remote_addr());
  bool wait_and_step();

  // A thread that runs free (no system-call stops; run_service): its next
  // stop's wait status. True for the stop interrupt() asked for; for any
  // other stop the thread runs on (PTRACE_CONT), and a fault or its death
  // throws as with wait_and_step().
  bool on_free_stop(int status);
  void resume_free();  // PTRACE_CONT
  void interrupt();    // PTRACE_INTERRUPT
  // The thread left the parasite on its own (its rt_sigreturn ran while it
  // ran free): its state is its own again, nothing of the guard's to put
  // back. The guard is spent.
  void forget() { parked_ = false; }

 private:
  Task& task_;
  std::optional<remote_addr> gadget_;
  Registers clean_;
  std::vector<uint8_t> xsave_;
  uint64_t mask_ = 0;
  remote_addr frame_;
  bool parked_ = false;
  bool in_sigreturn_ = false;  // between start() and the end of its rt_sigreturn
  bool interrupted_ = false;   // interrupt() asked, its stop not seen yet
  void resume();               // PTRACE_SYSCALL
  bool on_stop(int status);    // wait_and_step() with the stop's wait status
  // A fault, trap or death at a stop: the thread put back, an error thrown.
  void fail_on_fault_or_death(int status);
};

// A RemoteSyscalls scope on a parked thread: the calls run at the vDSO's
// `syscall; ... ret` with rsp on the guard's frame, so a thread that snap's
// death leaves behind completes the call and returns to its own context.
// Without such a site or gadget the calls still work, unprotected (-v says so).
class GuardedSyscalls {
 public:
  explicit GuardedSyscalls(Task& task);
  RemoteSyscalls& rs() { return *rs_; }
  bool healing() const { return healing_; }

 private:
  ThreadGuard guard_;  // declared first: released last
  std::optional<RemoteSyscalls> rs_;
  bool healing_ = false;
};

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

  // Runs snap_parasite_thread_entry in every thread of the process but the
  // leader, all at once (each on a slot of its own after the blob), and
  // returns what each reported, by tid.
  std::vector<std::pair<pid_t, snap_parasite_thread_state>> run_thread_entries();
  // Runs the command loop in the leader; `session` talks to it (on another
  // snap thread, while this one drives the leader with ptrace).
  void run_service(const std::function<void(ParasiteClient&)>& session);

  remote_addr base() const { return blob_->base(); }

 private:
  void unmap() noexcept;
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
// /proc/PID/timers: the POSIX timers' ids, clocks and notification.
std::vector<image::PosixTimer> read_posix_timers(pid_t pid);

}  // namespace snap::parasite
