// A file's contents as pages of the page store (image::GhostFile::
// data_in_pages): how the dump keeps files too large for the checkpoint's
// JSON, deduplicated and compressed like memory.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"
#include "tracer/memory.h"

namespace snap {

// The most of one file's contents the checkpoint's JSON keeps (a scratch
// file of tracer/temp_files.h, a deleted file of tracer/ghost_files.h), and
// of all those of one list: a larger one goes to the page store.
constexpr uint64_t kMaxInlineFileBytes = uint64_t{1} << 20;
constexpr uint64_t kMaxInlineFilesBytes = uint64_t{16} << 20;

// `path` opened for reading (with `flags` added), without waiting on a
// lease someone else holds and, where snap may, without touching its
// access time. Invalid (errno set) where it cannot be.
ScopedFd open_for_reading(const std::string& path, int flags = 0);

// The file that mapping `m` of process `pid` maps, opened for reading by
// its path as the process names it (from its root: a container's) or as
// snap does, where that still leads to the mapped file (the same device
// and inode). Invalid where neither does.
ScopedFd open_mapped_file(pid_t pid, const image::Mapping& m);

// Reads bytes [from, to) of the file open on `fd` into `sink` (`from` a
// multiple of the page size), in whole pages (the last one padded with
// zeros; holes, found with SEEK_DATA and SEEK_HOLE, skipped), as pages of
// pid image::kFilePagesPid and mapping `start`, the file's byte `off` at
// address start + off. A file shorter than `to` by now ends early. False,
// with why in *why, where a read fails.
bool read_file_pages(int fd, uint64_t from, uint64_t to, uint64_t start, const PageSink& sink,
                     std::string* why);

// A series: the pages of a file of `size` bytes kept in the page store under
// temp_files id `id` (image::file_pages_start) are those the checkpoint
// before stored for it under `base_id`.
inline EarlierPages file_as_before(uint64_t id, uint64_t base_id, uint64_t size) {
  return {image::file_pages_start(id), image::file_pages_start(id), image::file_pages_start(base_id),
          (size + image::kPageSize - 1) / image::kPageSize};
}

}  // namespace snap
