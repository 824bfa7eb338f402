// A copy-on-write snapshot of a stopped process's memory, so the job runs
// again while snap reads and compresses its pages.
//
// The stopped leader executes clone() with no flags and exit signal 0 (a
// fork its parent is never told about and that plain wait() does not see).
// The child never runs: it is born traced by snap, which then sets
// PTRACE_O_EXITKILL on it; and its stack pointer is 8 (clone's newsp), so
// even if snap died before that, the child would fault at the first `ret`
// (or, cloned by keep_out_fork.S, exit at once) instead of running the
// job's code. The leader makes the call through
// GuardedSyscalls, so if snap dies meanwhile it returns to its own context.
// The child's memory is the job's memory at the instant of the dump; the
// kernel copies a page only when the job writes it. Release kills the
// child, and the job's leader reaps it in one more remote wait4(), so
// nothing is left behind.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "image/checkpoint.h"
#include "tracer/task.h"

namespace snap {
class RemoteSyscalls;
}

namespace snap::parasite {

class MemorySnapshot {
 public:
  // Takes the snapshot from `leader` (stopped). Returns nullptr when the
  // kernel refuses the clone (e.g. memory overcommit limits): the caller
  // then reads the memory while the job is still stopped.
  //
  // Some mappings are kept out of the child and read from the job while
  // it is stopped instead (sparse reservations, the stacks of the threads
  // but the leader: keep_out.h says which and how). `mappings` are the
  // process's, sorted; `thread_sps` the stack pointers of its other threads;
  // `leader_rseq` the leader's rseq area, or 0 (its mapping stays in);
  // `read_before` the starts of mappings read before the stop, to keep out
  // as they fit (keep_out.h).
  static std::unique_ptr<MemorySnapshot> take(Task& leader,
                                              const std::vector<image::Mapping>& mappings,
                                              const std::vector<uint64_t>& thread_sps,
                                              uint64_t leader_rseq = 0,
                                              const std::vector<uint64_t>& read_before = {});
  ~MemorySnapshot();  // kills and reaps the child if release() was not called

  pid_t pid() const { return child_; }

  // A dump that was itself killed can leave its snapshot behind as a zombie
  // child of the job (exit signal 0, so nothing else ever collects it).
  // Collects such zombies, `left` (host pids, as SeizedTree::seize found
  // them: SeizedTree::Proc::left_snapshots), through the stopped `leader`;
  // returns how many.
  static int collect_leftovers(Task& leader, const std::vector<pid_t>& left);

  // Mappings the snapshot cannot show as they are (shared memory is not
  // copied on write, MADV_DONTFORK is absent in the child, MADV_WIPEONFORK
  // is zero there): read these from the job itself before it runs again.
  static bool differs_in_child(const image::Mapping& m);
  // Whether `m` is read from the job itself while it is stopped: it differs
  // in the child, or it was kept out of this snapshot (see take()).
  bool read_from_job(const image::Mapping& m) const;
  // The starts of the mappings kept out of the child, sorted.
  const std::vector<uint64_t>& kept_out() const { return kept_out_; }

  // Drops [start, end) from the snapshot: the child (never run, ptrace-
  // stopped) executes madvise(MADV_DONTNEED) on its own copy; the job is
  // not touched. Called once those pages are read: the snapshot no longer
  // shares them, so the job's later writes copy nothing. (process_madvise
  // does not allow MADV_DONTNEED on another process.) False, once logged,
  // when the kernel refuses (the pages are then kept until release).
  bool discard(uint64_t start, uint64_t end);
  // Same for several ranges (ascending, not overlapping) in one call when
  // it can: one madvise over the span from the first to the last, gaps
  // included (what lies between them must be read already or never be read,
  // e.g. other mappings dumped before, or unmapped holes: the kernel
  // releases the mapped parts and reports the holes with ENOMEM, which is
  // fine here). Where the span holds an area madvise refuses (VM_PFNMAP,
  // VM_IO ...), the ranges are released one by one.
  bool discard(const std::vector<std::pair<uint64_t, uint64_t>>& ranges);

  // Memory the snapshot holds alone: pages the job wrote (or freed) since
  // the snapshot was taken, which copy-on-write left private to the child
  // (smaps_rollup Private_Dirty + Private_Clean; right after the fork every
  // page is shared). This is what the snapshot costs beyond the job.
  uint64_t private_bytes() const;

  // Kills the child once everything was read from it, without waiting: the
  // kernel tears it down while the dump commits (20,000 mappings: ~20 ms).
  void end();
  // Kills the child (unless end() did), waits for its end and has the job's
  // leader `job_pid` reap it (a brief stop of that one thread).
  void release(pid_t job_pid);

 private:
  MemorySnapshot(pid_t child, std::vector<uint64_t> kept_out);
  void kill_child();
  long madvise_dontneed(uint64_t start, uint64_t end);  // in the child; -errno
  pid_t child_;
  std::unique_ptr<Task> task_;           // the child, for discard()
  std::unique_ptr<RemoteSyscalls> rs_;   // made at the first discard()
  bool discard_failed_ = false;
  bool ended_ = false, released_ = false;
  pid_t own_pid_ = -1;  // the child's pid as the job sees it, read by end()
  std::vector<uint64_t> kept_out_;  // starts of the mappings kept out of the child, sorted
};

}  // namespace snap::parasite
