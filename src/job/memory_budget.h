// The extra memory of a leave-running dump (DumpOptions::memory_budget):
// what the copy-on-write snapshots hold beyond the job, kept under a budget.
//
// After each batch read from a snapshot, that range is released from it.
// The budget is watched by a thread of its own from the moment the job runs
// again, at a fixed short interval, whatever the readers are doing (the job
// may copy hundreds of MiB before the readers' first batch is done on a busy
// machine). What the snapshots hold alone is measured exactly from
// smaps_rollup, but that walks their page tables, so it is not read at every
// look: between two readings, every page the job copies on write costs it a
// minor fault, so 4 KiB per minor fault of the job bounds the growth (from
// above: faults that copy nothing count too). Only when that bound comes
// near the budget (within twice the growth seen over the last interval:
// what may come before the next look) is every thread of the job stopped
// (ptrace, invisible to the job) and the exact figure read; with room left
// the job goes on, else it stays stopped until the rest is read. The
// watching thread is the only one that stops and lets go the job (ptrace
// ties a tracee to the thread that seized it).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "parasite/snapshot.h"
#include "tracer/task.h"

namespace snap::job {

// One copy-on-write snapshot per process of the job (null: none taken).
using Snapshots = std::vector<std::unique_ptr<parasite::MemorySnapshot>>;

class MemoryBudget {
 public:
  // `job`: the processes whose writes fill `snapshots` (which must outlive
  // this object), `budget` in bytes. Starts watching at once: construct it
  // right after the job is let go.
  MemoryBudget(uint64_t budget, std::vector<pid_t> job, const Snapshots& snapshots);
  // Stops watching; a job stopped for the budget goes on.
  ~MemoryBudget();
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // [start, end) of snapshot `s` is read. Ranges are released a few at a
  // time (one madvise for many small mappings). Called on one thread.
  void after_batch(parasite::MemorySnapshot& s, uint64_t start, uint64_t end);
  // Releases what after_batch() gathered.
  void flush();
  // Everything is read: stops watching and lets a job stopped for the
  // budget go again. The figures below are final after it.
  void thaw();

  // The most the snapshots were measured to hold alone (at the exact checks
  // and at the end; between readings it may have been up to 64 MiB more).
  uint64_t peak();
  bool reached() const { return reached_; }
  // How long the job was stopped for the budget, in all.
  double frozen_seconds() const { return frozen_seconds_; }

 private:
  void watch();  // the watching thread
  void stop_watching();
  void check();  // one look, on the watching thread
  uint64_t measure();
  void resume_job();
  void stop_job();  // every thread of the job, stopped (ptrace seize + interrupt)
  // The job's minor faults since the dump began, never decreasing (a
  // process that ends takes its count with it: what it had stays counted).
  uint64_t faults();

  static constexpr uint64_t kPeakResolution = 64ull << 20;
  // Ranges are released once they cover this much, or this many ranges are
  // waiting: about once per batch of a large mapping (8 MiB), and not once
  // per mapping where there are thousands of small ones.
  static constexpr uint64_t kFlushBytes = 8ull << 20;
  static constexpr size_t kFlushRanges = 4096;
  parasite::MemorySnapshot* pending_snap_ = nullptr;
  std::vector<std::pair<uint64_t, uint64_t>> pending_;
  uint64_t pending_bytes_ = 0;

  uint64_t budget_;
  std::vector<pid_t> job_;
  const Snapshots& snapshots_;
  // How often the job is looked at: 1 ms, longer for many processes (each
  // look reads every process's /proc/PID/stat).
  std::chrono::microseconds interval_;
  // Owned by the watching thread (read by others only after thaw()).
  std::vector<std::unique_ptr<Task>> tasks_;
  std::chrono::steady_clock::time_point frozen_at_;
  std::map<pid_t, uint64_t> seen_faults_;
  uint64_t faults_total_ = 0, faults_at_exact_ = 0, faults_last_ = 0, exact_ = 0, peak_ = 0,
           checks_ = 0, brief_stops_ = 0;
  double frozen_seconds_ = 0;
  bool frozen_ = false, reached_ = false;

  std::mutex mu_;
  std::condition_variable wake_;
  bool done_ = false;  // under mu_
  std::thread watcher_;
};

// The default memory budget of a leave-running dump (DumpOptions::
// memory_budget) of a job whose processes hold `resident_bytes` (their
// VmRSS summed), `job` one of them (its memory cgroup's room counts).
uint64_t default_memory_budget(uint64_t resident_bytes, pid_t job);
// What the memory cgroup (v2 or v1, and those above it) of `pid` has left
// below its limit; nullopt where there is no limit.
std::optional<uint64_t> cgroup_memory_left(pid_t pid);

}  // namespace snap::job
