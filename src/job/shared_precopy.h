// Shared memory the job's processes map (MAP_SHARED | MAP_ANONYMOUS areas
// shared across fork, System V segments, files on tmpfs such as /dev/shm:
// MPI's shared-memory transports; and files elsewhere mapped shared by
// several processes that the image saves, as PMIx's segments in the
// session directory) read before the stop of a leave-running dump.
// Without this, the stop write-protects every page of it in every process
// that maps it (parasite/shared_snapshot.h; a file not on tmpfs is read
// while the job is stopped: 7 ms for PMIx's 8 MiB): 12 ms of the freeze
// for 512 MiB here, and on this VM the job then runs another 6-10 ms
// before its own code does, its page tables being mapped again by the
// hypervisor after so large a change made while it was stopped.
//   before the stop: objects of at least min_bytes() of data that snap can
//     open (a file's path; /proc/PID/map_files for the anonymous ones,
//     which needs CAP_SYS_ADMIN), every mapping of each in the tree the
//     same range of it, one in each process; a file not on tmpfs mapped by
//     two processes at least (one mapping: job/file_precopy.h's); an
//     inotify watch on each (write(2), truncation, MADV_REMOVE and
//     fallocate: what no page table shows); each of those processes stopped
//     once, for one system call, a userfaultfd made in it (one a process,
//     for all its objects), and its mappings write-protected (but those
//     that can never write: a read-only file's)
//     (tracer/write_tracker.h, asynchronous: the job's writes are not held
//     up, the kernel only notes them, in each process's page tables); then
//     the object's data read (pread) into the sink as the pages of the
//     first process's mapping (the one that stores it: each page of a
//     shared object is stored once); then, once, the pages written
//     meanwhile protected again and read again, so that few are left for
//     the stop. A job that wrote more than MemoryPrecopy::kMaxRewritten of
//     it meanwhile: as without this.
//   at the stop: an object still mapped only as armed, with no event on
//     its watch, saved in the image (a file: named_shm or saved_file),
//     keeps what was read but for the pages no longer protected
//     in some process (written since, or their entry zapped since: a
//     written page zapped leaves no other trace), which are read again
//     while the job is stopped. A page first filled since by a read (a
//     hole then) holds zeros, as the hole read then did. An object with
//     more than half of it written since, or mapped otherwise since (a new
//     process, mremap, munmap), or changed other than through its
//     mappings, is forgotten: its protection ends (while stopped) and it
//     is taken as without this.
//   once the job runs again: the protection ends in the background with
//     the private memory's (MemoryPrecopy::adopt, end).
// Not seen, as for the snapshot: writes by a process outside the job that
// maps the object too, and DMA into its pages.
// Candidates as for FilePrecopy: the job in snap's pid namespace,
// processes not under seccomp.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base/byte_ranges.h"
#include "base/change_watch.h"
#include "base/scoped_fd.h"
#include "image/checkpoint.h"
#include "image/image_stats.h"
#include "tracer/write_tracker.h"

namespace snap::job {

class DumpSink;

class SharedPrecopy {
 public:
  // Less data than this in an object: write-protected at the stop. Small
  // objects count too: a process one object of which is write-protected at
  // the stop pays for a userfaultfd made in it then (MPI's shared-memory
  // segments hold tens of KiB of data, PMIx's a few MiB). Tests set
  // another with SNAP_SHARED_PRECOPY_MIN_BYTES.
  static constexpr uint64_t kMinBytes = uint64_t{16} << 10;
  static uint64_t min_bytes();

  using Key = std::pair<uint64_t, uint64_t>;  // (dev, inode)

  SharedPrecopy() = default;
  SharedPrecopy(SharedPrecopy&&) noexcept = default;
  SharedPrecopy& operator=(SharedPrecopy&&) noexcept = default;

  // Before the tree is seized, with the job running: reads the candidate
  // objects mapped by `pids` into `sink` (above); files not on tmpfs up
  // to `files_max` bytes of data in all (--shared-files-max). Never throws
  // but the sink's errors: what cannot be read this way is taken at the
  // stop as before (-v says why).
  static SharedPrecopy read(const std::vector<pid_t>& pids, DumpSink& sink, uint64_t files_max,
                            const std::function<void(const image::ImageStats&)>& progress = {});

  // With the tree stopped and `ckpt`'s mappings collected and marked
  // (mark_named_shared_memory): keeps or forgets each object (above).
  void settle(const image::Checkpoint& ckpt, DumpSink& sink);

  // After settle(): the objects kept, which the shared-memory snapshot
  // leaves alone.
  std::set<Key> kept() const;
  // The pages still to read, while stopped, of mapping `m` of `pid` if it
  // maps an object kept (none but for the mapping that stores it), nullopt
  // for any other.
  std::optional<std::vector<uint64_t>> pages(pid_t pid, const image::Mapping& m) const;
  // After settle(): the write tracking of the objects kept, to end once
  // the job runs again (MemoryPrecopy::adopt).
  std::vector<WriteTracker> take_trackers();

  // Bytes read before the stop of the objects kept, and bytes to read
  // again at the stop.
  uint64_t bytes_before() const { return bytes_before_; }
  uint64_t bytes_again() const { return bytes_again_; }
  bool used() const { return bytes_before_ > 0; }

 private:
  struct Mapped {
    pid_t pid = 0;
    uint64_t start = 0, end = 0;  // armed in trackers_[pid]
    bool tracked = true;  // false: a mapping that can never write, not armed
  };
  struct Object {
    Key key;
    uint64_t pgoff = 0, len = 0;
    std::string name;  // for messages
    ScopedFd fd;
    int watch = -1;  // its ChangeWatch id
    std::vector<Mapped> mapped;  // every mapping in the tree; the first stores the pages
    std::vector<ByteRange> given;  // read before the stop, addresses in the first mapping
    uint64_t bytes = 0;
    bool changed = false;  // settle(): its watch saw a change
    bool kept = false;     // settle()
    std::vector<uint64_t> again;  // settle(): to read while stopped
  };
  // Ends the protection of `o` and forgets what was read of it.
  void drop(Object& o, DumpSink& sink);
  // The tracker of process `pid`, made at its first object (the process
  // stopped for one userfaultfd() call). Throws.
  WriteTracker& tracker_of(pid_t pid);

  std::map<pid_t, WriteTracker> trackers_;  // one a process, for all its objects
  std::vector<Object> objects_;
  ChangeWatch watch_;
  uint64_t bytes_before_ = 0, bytes_again_ = 0;
};

}  // namespace snap::job
