// Data files a job writes through a shared mapping (image::Mapping::
// saved_file: a numpy.memmap array, an out-of-core solver's file) are part
// of its state at the stop, and a fork-style snapshot does not hold them (a
// fork shares such pages with the job). Read while the job is stopped,
// they cost its freeze 0.3-0.9 s a GiB here. A leave-running dump reads
// them before the stop instead, while the job runs, and at the stop reads
// again only the pages the job wrote meanwhile:
//   before the stop: an inotify watch on each such file (write(2),
//     truncation, fallocate: what no page table shows); its process stopped
//     for one system call, a userfaultfd made in it, and, running again,
//     the mapping write-protected from snap a piece at a time
//     (tracer/write_tracker.h, asynchronous: the job's writes are not held
//     up, the kernel only notes them); then the file's
//     data in the mapped range read (pread) into the sink as the mapping's
//     pages.
//   at the stop: where nothing rules that reading out (the mapping is still
//     the one armed and still the file's only mapping in the tree, and its
//     pages are saved: saved_file, or named_shm for such a file in a
//     temporary directory; the file got no event), the pages no longer
//     write-protected are forgotten in the sink and read again while the
//     job is stopped; elsewhere all its pages are forgotten and read while
//     stopped, as without this.
//   once the job runs again: the protection ends in the background with
//     the private memory's (MemoryPrecopy::adopt, end).
// Candidates: a writable MAP_SHARED mapping of a regular file not on tmpfs
// (shared memory files: job/shared_precopy.h), the file's only
// mapping in the tree, with at least kMinBytes of data in the mapped range
// and no more than 16 times as long as that data; the job in snap's pid
// namespace (pages are stored under the job's pids); a leader not under
// seccomp (it makes one system call before the stop).
// Not seen: a program outside the job writing the file through a mapping
// of its own while it is read.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/change_watch.h"
#include "base/scoped_fd.h"
#include "image/checkpoint.h"
#include "image/image_stats.h"
#include "tracer/memory.h"
#include "tracer/write_tracker.h"

namespace snap::job {

class DumpSink;

class FilePrecopy {
 public:
  // Less data than this in a mapping is read while stopped (a few ms).
  static constexpr uint64_t kMinBytes = uint64_t{32} << 20;

  FilePrecopy() = default;
  FilePrecopy(FilePrecopy&&) noexcept = default;
  FilePrecopy& operator=(FilePrecopy&&) noexcept = default;

  // Before the tree is seized, with the job running: reads the candidates
  // of `pids` into `sink`, up to `max_bytes` of data in all (what the dump
  // would save of such files), calling `progress` (if any) after each
  // piece. Never throws but the sink's errors: what cannot be read this
  // way is read while stopped (-v says why).
  static FilePrecopy read(const std::vector<pid_t>& pids, DumpSink& sink, uint64_t max_bytes,
                          const std::function<void(const image::ImageStats&)>& progress = {});

  // With the tree stopped, `ckpt`'s mappings collected and marked
  // (mark_named_shared_memory): keeps each mapping read before the stop or
  // forgets its pages (above). Throws SysError when a kept mapping's
  // pagemap cannot be read.
  void settle(const image::Checkpoint& ckpt, DumpSink& sink);
  // After settle(): the write tracking, to end once the job runs again
  // (MemoryPrecopy::adopt: ending it while stopped, as before, took the
  // freeze of a job writing a 1 GiB file it maps from 21-24 to 16 ms here).
  std::vector<WriteTracker> take_trackers();

  // For reading the stopped job's memory: the pages still to read of a
  // mapping kept by settle() (those written since it was read), nullopt
  // for any other.
  std::optional<std::vector<uint64_t>> pages(pid_t pid, const image::Mapping& m) const;

  // Whether settle() kept any mapping read before the stop.
  bool used() const { return kept_ > 0; }
  // Bytes read before the stop of the mappings kept, and of those the
  // pages read again.
  uint64_t bytes_before() const { return bytes_before_; }
  uint64_t bytes_again() const { return bytes_again_; }

 private:
  struct File {
    pid_t pid = 0;
    image::Mapping mapping;  // as read before the stop (range, offset, file)
    int watch = -1;          // its ChangeWatch id
    uint64_t bytes = 0;      // read before the stop
    bool changed = false;    // its watch saw a change: not kept
    bool kept = false;       // settle(): read before the stop, but `again`
    std::vector<uint64_t> again;
  };
  std::vector<File> files_;
  std::map<pid_t, WriteTracker> trackers_;
  ChangeWatch watch_;
  uint64_t bytes_before_ = 0, bytes_again_ = 0;
  size_t kept_ = 0;
};

}  // namespace snap::job
