// What identifies a file's contents (image::FileStamp): size, mtime, inode
// and, for ELF files, the build id; and how a file differs from its stamp.
#pragma once

#include <optional>
#include <string>

#include "image/checkpoint.h"
#include "tracer/file_view.h"

namespace snap {

// The stamp of `path` now; nullopt when it cannot be stat()ed.
std::optional<image::FileStamp> stamp_file(const std::string& path);

// Why the file now stamped `now` is not the one stamped `saved` ("size
// 16432 -> 16440", "build id 1a2b.. -> 3c4d..", "modified (mtime)"), or
// empty when it is the same. The inode is not compared: on another node
// the same file has another one.
std::string stamp_change(const image::FileStamp& saved, const image::FileStamp& now);

// Stamps every executable and private file mapping of the checkpoint's
// processes into ckpt.code_files (deleted files excluded), each file the
// one its process names by that path (`views`): a restore where the path
// leads to another file, or none, refuses.
void record_code_files(image::Checkpoint& ckpt, const FileViews& views);

}  // namespace snap
