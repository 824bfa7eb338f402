// A job's private memory read while it runs, before the stop of a
// leave-running dump, so that the stop reads only what the job wrote
// meanwhile, and the copy-on-write snapshot forked at the stop, whose fork
// copies the page tables of all it holds while the job is stopped (8 ms
// for 100 MiB of small pages here, 45 ms a GiB), leaves out the mappings
// of which the job wrote little.
//   before the stop: of each process, the private writable mappings that
//     hold kMinPages pages or more (the kMaxMappings that hold most); the
//     process stopped for one system call (its userfaultfd,
//     tracer/write_tracker.h), then, running again, those mappings'
//     populated pages write-protected from snap (asynchronous: the job's
//     writes are not held up, the kernel only notes them; a piece at a
//     time) and read (/proc/PID/mem: no pin, a page copy-on-write shared
//     with a child stays shared) into the sink as the mappings' pages. A
//     mapping that changes under the read (unmapped, shrunk) is forgotten
//     and read at the stop. A job that writes again more of what was just
//     read than kMaxRewritten is a job the reading cannot keep up with:
//     reading stops there, what was read stays used, the rest is read at
//     the stop as without this.
//   at the stop (settle): each mapping that lies within what was armed (as
//     armed, or a part split off since: the pages read of a part that
//     starts elsewhere now move to it) keeps what was read, but for the
//     pages written since and those read that hold nothing now (released:
//     zero), which are forgotten and read again, and those that hold state
//     but were not read (where the reading stopped, or failed), which are
//     read: while the job is stopped for the mappings kept out of the
//     snapshot (little to read: at most an eighth of what they hold,
//     kLeftMax in all), from the snapshot for the others; a mapping with
//     more than half of what it holds to read is read as without this
//     (a list of its pages would cost snap 8 bytes a page). What was read of anything else (mapped
//     again, moved, grown, made read-only since) is forgotten, and read as
//     without this.
//   once the job runs again (end): the protection taken off on a thread of
//     snap's, a piece at a time; what is left of it when a `snap dump` has
//     committed its image is left to a child process of snap's
//     (hand_off), so that the command need not wait for it.
// Costs: the job's first write to each page after arming takes a minor
// fault, and its page faults may wait for one piece being protected or
// unprotected (~1 ms); pages written after they were read are read again,
// their new contents taking the places of the first copies in the page
// store where those were stored raw (image/freed_places.h: in room reserved
// at the end of read(), twice what was written again while it read, 32 MiB
// at most), else stored twice (the first copy referred to by nothing), all
// bounded by kMaxRewritten; the dump reads that memory once more than it
// wrote.
// Not for --kill dumps (the job stays stopped anyway) nor for series that
// track writes themselves (job/incremental.h: one userfaultfd a range).
// Candidates as for FilePrecopy: the job in snap's pid namespace, leaders
// not under seccomp. While it runs the job cannot register those mappings
// with a userfaultfd of its own (EBUSY). Writes the CPU does not make
// through the job's page tables are not seen (DMA into pinned pages: RDMA,
// io_uring fixed buffers, O_DIRECT reads in flight), as for incremental
// checkpoints.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "base/byte_ranges.h"
#include "image/checkpoint.h"
#include "image/image_stats.h"
#include "tracer/memory.h"
#include "tracer/write_tracker.h"

namespace snap::job {

class DumpSink;

class MemoryPrecopy {
 public:
  // Reading stops once the job wrote again more than this share of what
  // was read, while it was read (checked every kCheckBytes of range).
  static constexpr double kMaxRewritten = 0.125;
  static constexpr uint64_t kCheckBytes = uint64_t{64} << 20;
  // Mappings read before the stop: those holding this many pages or more,
  // up to this many of them (those that hold most). Small ones cost a fork
  // next to nothing, and each one costs a page-table walk while stopped.
  static constexpr uint64_t kMinPages = 64;
  static constexpr size_t kMaxMappings = 128;
  // Runs of pages read, at most, in all (a job's memory scattered page by
  // page costs snap 16 bytes a run): 16 MiB.
  static constexpr size_t kMaxRuns = size_t{1} << 20;
  // A mapping is kept out of the snapshot where the job wrote at most a
  // kLeftShare-th of what it holds since it was read (a fork costs ~45 ms
  // a GiB of memory here, reading while stopped ~0.3 ms a MiB), up to
  // kLeftMax in all (what dump.cc holds while stopped).
  static constexpr uint64_t kLeftShare = 8;
  static constexpr uint64_t kLeftMax = uint64_t{32} << 20;
  // Room reserved for pages read again at the stop to take the places of
  // their first copies, beyond twice those written again while read: 1 MiB.
  static constexpr uint64_t kReservedPages = 256;
  // Makes that room in `sink` (image/freed_places.h) for a pre-copy (this
  // one, or job/file_precopy.h's) whose job wrote `rewritten` of its pages
  // again while they were read: twice as many, for the time until the
  // stop, plus kReservedPages.
  static void reserve_places_for(DumpSink& sink, uint64_t rewritten);

  MemoryPrecopy() = default;
  MemoryPrecopy(MemoryPrecopy&&) noexcept = default;
  MemoryPrecopy& operator=(MemoryPrecopy&&) noexcept = default;
  ~MemoryPrecopy() { end(); }  // a failed dump too, once the job runs again; joins ending_

  // Before the tree is seized, with the job running: reads the private
  // memory of `pids` into `sink` (above), calling `progress` (if any) after
  // each piece. Never throws but the sink's errors: a process that cannot
  // be read this way is read at the stop (-v says why).
  static MemoryPrecopy read(const std::vector<pid_t>& pids, DumpSink& sink, MemoryReaders& readers,
                            const std::function<void(const image::ImageStats&)>& progress = {});

  // With the tree stopped and `ckpt`'s mappings collected: keeps or forgets
  // in the sink what read() gave it (above). Throws SysError when a
  // process's pagemap cannot be scanned.
  void settle(const image::Checkpoint& ckpt, DumpSink& sink);

  // The pages still to read of a mapping settle() kept (those written since
  // it was read), nullopt for any other.
  std::optional<std::vector<uint64_t>> pages(pid_t pid, const image::Mapping& m) const;

  // After settle(): the starts of the mappings of `pid` (ascending) to keep
  // out of its copy-on-write snapshot (parasite/keep_out.h): read before,
  // and what the job wrote of them since is little enough to read while it
  // is stopped (kLeftMax in all).
  std::vector<uint64_t> keep_out(pid_t pid) const;
  // Bytes read before the stop that settle() kept, and bytes left to read
  // at the stop in mappings it kept.
  uint64_t bytes_before() const { return bytes_before_; }
  uint64_t bytes_again() const { return bytes_again_; }
  // The heap settle() may build on, at most (its lists of runs, from the
  // runs of pages read() gave): warmed before the stop (base/heap.h), or
  // its page faults lengthen the freeze (bench's "10 % ever touched", 2,600
  // runs: ~90 faults, settling 2.9 -> 1.6 ms, medians of 12 dumps here).
  size_t settle_heap_bytes() const;
  bool used() const { return !kept_.empty(); }

  // Once the job runs again: ends the tracking on a thread of its own,
  // while the dump goes on, a piece of each range at a time
  // (WriteTracker::disarm: ~1.2 s a GiB of pages here, most of it pauses
  // between pieces), so that the job's page faults wait for no more than
  // one piece. The destructor waits for that thread.
  void end();

  // Write tracking of other memory (job/shared_precopy.h) that end() ends
  // with this one's, the same way.
  void adopt(std::vector<WriteTracker> trackers);

  // For a snap that is about to exit once its dump is done: what end() has
  // not unprotected yet is unprotected by a child process of snap's (the
  // same pieces, in a session of its own, no descriptor of snap's but the
  // userfaultfds), so that snap need not wait for it. Returns its pid and
  // the bytes left to it, {0, 0} when nothing was left.
  struct HandedOff {
    pid_t pid = 0;
    uint64_t bytes = 0;
  };
  HandedOff hand_off();

 private:
  struct Process {
    WriteTracker tracker;
    std::map<uint64_t, std::vector<ByteRange>> given;  // mapping start -> pages given
    uint64_t bytes = 0;
  };
  // What end() works on: the trackers of this one's processes, and those
  // adopted.
  struct Ending {
    std::map<pid_t, Process> processes;
    std::vector<WriteTracker> adopted;
  };
  // Ends the tracking of each, a piece at a time (false: `stop` asked
  // first). Allocates nothing.
  static bool unprotect(Ending& ending, std::stop_token stop);

  std::map<pid_t, Process> trackers_;
  std::vector<WriteTracker> adopted_;
  // settle(): per process, mapping start -> pages to read at the stop.
  std::map<pid_t, std::map<uint64_t, std::vector<uint64_t>>> kept_;
  std::map<pid_t, std::vector<uint64_t>> keep_out_;
  uint64_t bytes_before_ = 0, bytes_again_ = 0;
  // end()'s: the trackers it works on, and its thread (declared last:
  // joined first).
  std::shared_ptr<Ending> ending_trackers_;
  std::jthread ending_;
};

}  // namespace snap::job
