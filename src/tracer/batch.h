// Many system calls executed by a stopped thread in one ptrace round trip.
//
// A RemoteSyscalls call costs a ptrace round trip (set registers, resume to
// the syscall entry and exit, read registers back): tens of microseconds,
// which is what rebuilding 20,000 mappings or 256 threads one call at a time
// spends. A SyscallBatch maps one area in the target: a page holding a tiny
// loop (batch_loop.S, copied from snap's own code) and an arena for the
// queued calls and their arguments (paths, structs). run() writes the queue
// in one process_vm_writev, points the thread at the loop, and waits for
// the loop's int3: every call runs in the target without snap in between.
// The first call that fails (and was not queued as one that may) stops the
// loop; run() then throws SysError naming that call.
//
// The area belongs to the process, so any of its threads can run a batch;
// the destructor unmaps it through the RemoteSyscalls scope it came from.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/remote_ptr.h"

namespace snap {

class RemoteSyscalls;
class Task;

class SyscallBatch {
 public:
  static constexpr uint64_t kDefaultArena = 1 << 20;
  // The bytes the batch maps in the target for an arena of `arena` bytes.
  static uint64_t footprint(uint64_t arena = kDefaultArena);

  // Maps the area through `rs` (MAP_FIXED_NOREPLACE at `at` when given).
  explicit SyscallBatch(RemoteSyscalls& rs, std::optional<remote_addr> at = std::nullopt,
                        uint64_t arena = kDefaultArena);
  ~SyscallBatch();  // unmaps the area (queued calls that never ran are dropped)
  SyscallBatch(const SyscallBatch&) = delete;
  SyscallBatch& operator=(const SyscallBatch&) = delete;

  // Makes room for `calls` more calls with `data` bytes of arguments, running
  // what is queued (on the scope's thread) when they would not fit.
  void reserve(size_t calls, size_t data);

  // Copies argument bytes into the arena; their address in the target is
  // valid until the queue runs. Needs room (reserve()).
  remote_addr put(const void* data, size_t n);
  remote_addr put(const std::string& s) { return put(s.c_str(), s.size() + 1); }
  template <typename T>
  remote_addr put_value(const T& v) { return put(&v, sizeof v); }

  enum Check { kMustSucceed = 0, kMayFail = 1, kReturnsFirstArg = 2 };
  // Queues call `nr`; `what` names it in errors. Returns its index among the
  // calls whose results the next run() returns.
  size_t add(std::string what, Check check, long nr, uint64_t a1 = 0, uint64_t a2 = 0,
             uint64_t a3 = 0, uint64_t a4 = 0, uint64_t a5 = 0, uint64_t a6 = 0);
  size_t add(std::string what, long nr, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0,
             uint64_t a4 = 0, uint64_t a5 = 0, uint64_t a6 = 0) {
    return add(std::move(what), kMustSucceed, nr, a1, a2, a3, a4, a5, a6);
  }
  size_t queued() const { return calls_.size(); }

  // Runs the queue in `task` (the scope's thread by default; any stopped
  // thread of the same process) and returns the raw results (-errno) of the
  // calls queued since the last run(), including those reserve() ran.
  // The thread's registers are put back afterwards.
  std::vector<long> run();
  std::vector<long> run(Task& task);

  // Reads back bytes the calls wrote into the arena (e.g. an id a call
  // stored through a pointer put()); valid until the next put().
  void read(remote_addr at, void* out, size_t n) const;
  // Writes bytes into the target's memory (not the arena) at once.
  void write(remote_addr at, const void* data, size_t n) const;

  RemoteRange range() const { return {base_, base_ + static_cast<int64_t>(footprint(arena_))}; }

 private:
  struct Call {
    uint64_t words[8];
  };
  void run_queue(Task& task);

  RemoteSyscalls& rs_;
  remote_addr base_;
  uint64_t arena_;
  size_t max_calls_;
  std::vector<Call> calls_;
  std::vector<std::string> what_;
  std::vector<uint8_t> data_;  // the data half of the arena, filled from its start
  std::vector<long> results_;  // of runs since the last run()
};

}  // namespace snap
