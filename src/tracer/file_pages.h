// A file's contents as pages of the page store (image::GhostFile::
// data_in_pages): how the dump keeps files too large for the checkpoint's
// JSON, deduplicated and compressed like memory.
#pragma once

#include <cstdint>
#include <string>

#include "tracer/memory.h"

namespace snap {

// Reads bytes [from, to) of the file open on `fd` into `sink` (`from` a
// multiple of the page size), in whole pages (the last one padded with
// zeros; holes, found with SEEK_DATA and SEEK_HOLE, skipped), as pages of
// pid image::kFilePagesPid and mapping `start`, the file's byte `off` at
// address start + off. A file shorter than `to` by now ends early. False,
// with why in *why, where a read fails.
bool read_file_pages(int fd, uint64_t from, uint64_t to, uint64_t start, const PageSink& sink,
                     std::string* why);

}  // namespace snap
