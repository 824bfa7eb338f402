// Files a stopped job holds that no path leads to any more: unlinked files,
// FIFOs and directories, and memfds (image::GhostFile). Their contents and
// attributes go into the image, since restore cannot reopen them by name.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "image/checkpoint.h"

namespace snap {

// The most data of unlinked files and memfds one image keeps (it is stored
// in the manifest).
constexpr uint64_t kMaxGhostBytes = uint64_t{64} << 20;

// Finds every fd, mapping and cwd of ckpt's (stopped, host-pid) processes
// that refers to a deleted file or a memfd, saves each such file once into
// ckpt.ghost_files (contents without holes, size, mode, owner, times,
// seals; a handle instead of contents when another link still leads to it)
// and sets FileDesc::ghost, Mapping::ghost and Process::cwd_ghost. A
// private mapping of a memfd becomes a file mapping (only its copied pages
// are saved). An inotify watch on a file no path led to gets the ghost of
// its inode (InotifyWatch::ghost). Throws Error naming the pid, the fd or
// mapping and the file (or watch)
// when one cannot come back faithfully (a hugetlbfs memfd, a file without
// a handle, more data than kMaxGhostBytes, a watched file deleted that no
// fd or mapping holds).
void collect_ghost_files(image::Checkpoint& ckpt);

// A file's stat (mode, owner, size, times, links, device and inode) into
// the GhostFile that describes it.
void fill_from_stat(const struct stat& st, image::GhostFile& f);

// The data extents of the first `size` bytes of the file open on `fd`
// (SEEK_DATA / SEEK_HOLE, so holes stay holes; everything where the file
// system cannot tell), read with pread. `before_each` (may be empty) is
// told each extent's length before it is read, and may throw to refuse it.
// Throws SysError naming `who` when a read fails.
std::vector<image::GhostExtent> read_data_extents(int fd, uint64_t size, const std::string& who,
                                                  const std::function<void(uint64_t)>& before_each);

}  // namespace snap
