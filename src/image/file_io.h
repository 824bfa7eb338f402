// Small file helpers for the image layer. Every failure becomes a SysError
// (or Error) that names the file.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "base/scoped_fd.h"
#include "image/manifest.h"

namespace snap::image::io {

ScopedFd open_file(const std::string& path, int flags, mode_t mode = 0600);

// Writes everything or throws; a write that makes no progress counts as ENOSPC.
void write_all(int fd, const void* data, size_t len, const std::string& path);

// Reads exactly len bytes at off or throws ("truncated" when the file ends).
void pread_exact(int fd, void* data, size_t len, off_t off, const std::string& path);

void fsync_fd(int fd, const std::string& path);
void fsync_dir(const std::string& dir);

// Writes a whole file, fsyncs it.
void write_file(const std::string& path, const void* data, size_t len);
std::string read_file(const std::string& path);

using FileSum = FileEntry;  // size and XXH3-64 (seed 0)
FileSum sum_file(const std::string& path);
FileSum sum_bytes(const void* data, size_t len);
// Throws snap::Error naming `file` when `got` is not the size and checksum
// the manifest records for it (`want`).
void check_sum(const std::string& file, const FileEntry& want, const FileSum& got);
// The whole file, once check_sum has passed on it.
std::string read_checked(const std::string& file, const FileEntry& want);

std::string hex64(uint64_t v);  // 16 lowercase hex digits

}  // namespace snap::image::io
