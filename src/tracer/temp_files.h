// The job's own files in the node's temporary directories (/tmp, /var/tmp,
// /dev/shm and each process's $TMPDIR): an MPI launcher's session
// directory, a library's lock file or FIFO, the directory a unix socket is
// bound in. A site cleans those after a job, and another node never had
// them, so a restore there would find them gone. The image keeps what the
// job holds of them, small enough to carry (image::Checkpoint::temp_files),
// and a restore makes only what is missing again.
#pragma once

#include <string>
#include <vector>

#include "image/checkpoint.h"
#include "tracer/file_pages.h"
#include "tracer/file_view.h"
#include "tracer/temp_file_contents.h"

namespace snap {

// The temporary directories of ckpt's (host-pid) processes: /tmp, /var/tmp,
// /dev/shm and every absolute $TMPDIR of their environments.
std::vector<std::string> temp_roots(const image::Checkpoint& ckpt);

// The directory an absolute `path` lies in ("/a/b" -> "/a", "/a" -> "/").
std::string parent_of(const std::string& path);

// The outermost of `roots` that `path` lies strictly within, or empty.
std::string temp_root_of(const std::string& path, const std::vector<std::string>& roots);

// Fills ckpt.temp_files (sorted by path, so that a directory comes before
// what it holds) from ckpt's stopped processes: every regular file, FIFO
// and directory an fd of the job holds under one of `roots`, every regular
// file there a process maps without writing it through the mapping (where
// its path still leads to the mapped file), and every
// directory between such a root and those files, the files of named shared
// memory (Mapping::named_shm, whose pages the image holds anyway), the
// names unix sockets are bound to, and the processes' working directories.
// A $TMPDIR other than /tmp, /var/tmp and /dev/shm is itself one of the
// directories. A regular file's contents (up to kMaxInlineFileBytes,
// kMaxInlineFilesBytes in all) are read here; those of a larger one are left
// to the returned TempFileContents (data_in_pages), whose store() the dump
// calls once the memory is read. Files it cannot read stay files the
// restore reopens by path (-v says which; a larger one, node-local scratch
// or data staged there, is named in a warning: a restore on another node
// needs it copied back).
// Larger files are carried up to `pages_max` bytes in all, in the order
// their fds come. Paths are the processes' own (`views`).
// `base`: the previous checkpoint of a series, or nullptr. A larger file's
// entry records its settled ctime (image::GhostFile::ctime_ns); one that is
// as the base kept it (the same dev, inode, size, mtime and that ctime;
// mapped to write through neither then nor now) is not read again: its
// pages refer to the base's (TempFileContents::earlier).
TempFileContents collect_temp_files(image::Checkpoint& ckpt, const std::vector<std::string>& roots,
                                    uint64_t pages_max, const FileViews& views,
                                    const image::Checkpoint* base = nullptr);

}  // namespace snap
