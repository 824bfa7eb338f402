// Files a stopped job holds that no path leads to any more: unlinked files,
// FIFOs and directories, and memfds (image::GhostFile). Their contents and
// attributes go into the image, since restore cannot reopen them by name.
#pragma once

#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"
#include "tracer/memory.h"

namespace snap {

// A deleted file or memfd whose contents go to the page store: its entry's
// id, the byte ranges to read (those no shared mapping of the job covers),
// an fd snap opened on it, and how errors name it.
struct PagedGhost {
  uint64_t id = 0;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  ScopedFd fd;
  std::string who;
  // Its fstat when collected (the job stopped): what check_unchanged()
  // compares with.
  struct stat collected {};
  // The job maps some of it shared: a write through such a mapping may
  // leave its ctime as it was (tmpfs), so take_quiet() leaves it.
  bool mapped_shared = false;
};

// Finds every fd, mapping and cwd of ckpt's (stopped, host-pid) processes
// that refers to a deleted file or a memfd, saves each such file once into
// ckpt.ghost_files (size, mode, owner, times, seals, and its contents
// without holes: in the entry up to kMaxInlineFileBytes, else left to the
// page store; not where the job maps it shared, since those pages are read
// as shared memory and restore writes them into the file (a sealed memfd
// excepted); a handle instead of contents when another link still leads
// to it) and sets FileDesc::ghost, Mapping::ghost, Process::cwd_ghost and
// Process::exe_ghost. A
// private mapping of a memfd becomes a file mapping (only its copied pages
// are saved). An inotify watch on a file no path led to gets the ghost of
// its inode (InotifyWatch::ghost). Returns the files whose contents
// store_ghost_pages must read, while the job is still stopped (or those
// take_quiet() leaves, later). Throws Error
// naming the pid, the fd or mapping and the file (or watch) when one cannot
// come back faithfully (a hugetlbfs memfd, a file without a handle, a
// watched file deleted that no fd or mapping holds).
std::vector<PagedGhost> collect_ghost_files(image::Checkpoint& ckpt);

// Reads the contents of `ghosts` into `sink` as pages of pid
// image::kFilePagesPid, mapping image::ghost_pages_start(id). The job must
// still be stopped, or the ghosts be ones take_quiet() gave and each be
// checked with check_unchanged() once read. Throws SysError naming the file
// where a read fails. Returns the bytes read.
uint64_t store_ghost_pages(const std::vector<PagedGhost>& ghosts, const PageSink& sink);

// Whether nothing changed the file open on `fd` (its stat `st`) for `quiet`
// before now (its ctime that long past), on a file system whose stat tells
// every change at once (tmpfs, which holds memfds, ext4, xfs, btrfs; not a
// network file system, whose client may show cached attributes). Any
// change after the stop (a write, truncate, fallocate, chmod: by the job or
// anyone) sets the ctime to a time after the stop, which the kernel's
// clock, however coarse, tells from one `quiet` before it.
bool quiet_for(const struct stat& st, int fd, std::chrono::seconds quiet);

// A checkpoint of a series: records in ckpt's entry of each of `ghosts`
// that the job does not map shared its ctime (image::GhostFile::ctime_ns)
// where it is settled, and moves out of `ghosts` those that are as the
// previous checkpoint `base` kept them (the same dev, inode, size, mtime
// and the ctime recorded there; mapped shared by no process of base
// either): nothing of them is read, their pages are those base stored
// (returned). Does nothing without a base but record.
std::vector<EarlierPages> take_unchanged_ghosts(image::Checkpoint& ckpt,
                                                std::vector<PagedGhost>& ghosts,
                                                const image::Checkpoint* base);

// Moves out of `ghosts` those quiet_for `quiet`, that the job does not map
// shared: a dump that lets the job run again may read those afterwards,
// off the job's freeze.
std::vector<PagedGhost> take_quiet(std::vector<PagedGhost>& ghosts, std::chrono::seconds quiet);

// Throws Error naming the file when its ctime, mtime or size is no longer
// what it was when collected: the contents read may not be those of the
// stop.
void check_unchanged(const PagedGhost& g);

// A file's stat (mode, owner, size, times, links, device and inode) into
// the GhostFile that describes it.
void fill_from_stat(const struct stat& st, image::GhostFile& f);

// A file time as nanoseconds since the epoch.
inline int64_t to_ns(const timespec& t) { return int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec; }

// The ctime of the file stat()ed as `st` where it is settled, at least
// image::kSettledNs before now (what image::GhostFile::ctime_ns records);
// else 0.
int64_t settled_ctime(const struct stat& st);

// Whether `before`, a file's entry in the previous checkpoint of a series,
// still holds what the file holds now (its entry `now`, its ctime now
// `ctime`): the same kind, dev, inode, size and mtime, and the ctime
// `before` recorded.
bool same_as_before(const image::GhostFile& before, const image::GhostFile& now, int64_t ctime);

// (dev, inode) of every file a process of `ckpt` maps so that it may write
// through the mapping (image::may_write_file): a page mapped writable takes
// later writes without a fault, so without a new ctime, and no time of
// such a file tells whether it changed, then or since.
std::set<std::pair<uint64_t, uint64_t>> files_mapped_to_write(const image::Checkpoint& ckpt);

// What the previous checkpoint of a series kept of files by their paths
// (its entries of Checkpoint::temp_files that `keeps` chooses, with
// ctime_ns), for the next one to tell the files still as it kept them.
class KeptBefore {
 public:
  // `base`: the previous checkpoint, or nullptr (then nothing is as it kept it).
  KeptBefore(const image::Checkpoint* base, bool (*keeps)(const image::GhostFile&));
  // base's entry for the file `now` (stat()ed as `st`) where it still holds
  // what the file holds (same_as_before), and no process maps the file to
  // write through, in base or now (`mapped_now`: files_mapped_to_write of
  // this checkpoint); else nullptr.
  const image::GhostFile* same(const image::GhostFile& now, const struct stat& st,
                               const std::set<std::pair<uint64_t, uint64_t>>& mapped_now) const;

 private:
  std::map<std::string, const image::GhostFile*> entries_;  // by path
  std::set<std::pair<uint64_t, uint64_t>> mapped_written_;  // files_mapped_to_write(base)
};

// The data extents of bytes [from, to) of the file open on `fd`
// (SEEK_DATA / SEEK_HOLE, so holes stay holes; everything where the file
// system cannot tell), read with pread. Throws SysError naming `who` when a
// read fails.
std::vector<image::GhostExtent> read_data_extents(int fd, uint64_t from, uint64_t to,
                                                  const std::string& who);

}  // namespace snap
