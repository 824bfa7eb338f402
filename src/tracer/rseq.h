// Restartable sequences (rseq(2)) and a thread snap stops inside one.
//
// A thread may be stopped in the middle of a restartable sequence's critical
// section (per-CPU data: tcmalloc's per-CPU caches, librseq). The kernel's
// contract is that a thread preempted there, or given a signal, goes on at
// the sequence's abort handler, never at the instruction it was stopped on:
// the sequence may have read the state of another CPU than the one it now
// runs on. The kernel aborts it at the thread's return to user space, from
// the thread's registers and the rseq_cs pointer of its rseq area; but
// where snap runs code in the thread first (the parasite, remote system
// calls), the kernel sees that code's address, not the sequence's, clears
// rseq_cs, and the thread, given its registers back, would finish the
// sequence as if nothing had happened. So snap does the kernel's part while
// the thread is stopped, before anything runs in it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "base/remote_ptr.h"
#include "tracer/registers.h"
#include "tracer/task.h"

namespace snap {

// A stopped thread's rseq area (address, length, signature:
// Task::rseq_configuration) and the area's rseq_cs word as it was read.
struct RseqState {
  std::optional<std::array<uint64_t, 3>> area;
  remote_addr cs;  // the critical section descriptor's address; null: in none
};

// The state of each of `tasks` (threads of process `pid`, stopped): their
// rseq_cs words read with one system call (a thread whose word cannot be
// read counts as in no section).
std::vector<RseqState> read_rseq_states(pid_t pid, const std::vector<const Task*>& tasks);
// The same for one thread.
RseqState read_rseq_state(const Task& task);

// What a thread stopped at `regs` in `state` would have if the kernel
// aborted the critical section it is in: registers at the abort handler,
// the area's rseq_cs cleared in the thread's memory. `regs` unchanged when
// it is in none (or its descriptor cannot be read: the kernel would then
// kill it at its return to user space anyway).
Registers leave_rseq_critical_section(const Task& task, const Registers& regs,
                                      const RseqState& state);

// Whether `ip` lies in the critical section [start_ip, start_ip +
// post_commit_offset) of an rseq_cs descriptor, as the kernel tells.
inline bool in_rseq_critical_section(uint64_t ip, uint64_t start_ip, uint64_t post_commit_offset) {
  return ip - start_ip < post_commit_offset;
}

}  // namespace snap
