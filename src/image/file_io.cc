#include "image/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <memory>

#include <fmt/core.h>

#include "base/error.h"

namespace snap::image::io {

ScopedFd open_file(const std::string& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) throw SysError(fmt::format("open({})", path), errno);
  return ScopedFd(fd);
}

void write_all(int fd, const void* data, size_t len, const std::string& path) {
  auto p = static_cast<const uint8_t*>(data);
  while (len > 0) {
    ssize_t n = ::write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw SysError(fmt::format("write({})", path), errno);
    if (n == 0) throw SysError(fmt::format("write({})", path), ENOSPC);
    p += n;
    len -= static_cast<size_t>(n);
  }
}

void pread_exact(int fd, void* data, size_t len, off_t off, const std::string& path) {
  auto p = static_cast<uint8_t*>(data);
  while (len > 0) {
    ssize_t n = ::pread(fd, p, len, off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw SysError(fmt::format("read({})", path), errno);
    if (n == 0)
      throw Error(fmt::format("{}: truncated (file ends at offset {})", path, off),
                  "the image is damaged or incomplete");
    p += n;
    off += n;
    len -= static_cast<size_t>(n);
  }
}

void fsync_fd(int fd, const std::string& path) {
  if (::fsync(fd) < 0) throw SysError(fmt::format("fsync({})", path), errno);
}

void fsync_dir(const std::string& dir) {
  ScopedFd fd = open_file(dir, O_RDONLY | O_DIRECTORY);
  fsync_fd(fd.get(), dir);
}

void write_file(const std::string& path, const void* data, size_t len) {
  ScopedFd fd = open_file(path, O_WRONLY | O_CREAT | O_EXCL);
  write_all(fd.get(), data, len, path);
  fsync_fd(fd.get(), path);
  if (::close(fd.release()) < 0) throw SysError(fmt::format("close({})", path), errno);
}

std::string read_file(const std::string& path) {
  ScopedFd fd = open_file(path, O_RDONLY);
  struct stat st;
  if (::fstat(fd.get(), &st) < 0) throw SysError(fmt::format("stat({})", path), errno);
  std::string s(static_cast<size_t>(st.st_size), '\0');
  pread_exact(fd.get(), s.data(), s.size(), 0, path);
  return s;
}

FileSum sum_file(const std::string& path) {
  ScopedFd fd = open_file(path, O_RDONLY);
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st(XXH3_createState(),
                                                                &XXH3_freeState);
  if (!st) throw std::bad_alloc();
  XXH3_64bits_reset(st.get());
  constexpr size_t kChunk = 1 << 20;
  auto buf = std::make_unique_for_overwrite<uint8_t[]>(kChunk);
  FileSum sum;
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.get(), kChunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw SysError(fmt::format("read({})", path), errno);
    if (n == 0) break;
    XXH3_64bits_update(st.get(), buf.get(), static_cast<size_t>(n));
    sum.size += static_cast<uint64_t>(n);
  }
  sum.xxh3 = XXH3_64bits_digest(st.get());
  return sum;
}

FileSum sum_bytes(const void* data, size_t len) { return {len, XXH3_64bits(data, len)}; }

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

void check_sum(const std::string& file, const FileEntry& want, const FileSum& got) {
  constexpr const char* kDamaged = "the image is damaged; it cannot be restored";
  if (got.size != want.size)
    throw Error(fmt::format("{}: size is {} bytes, manifest.json says {}", file, got.size,
                            want.size),
                kDamaged);
  if (got.xxh3 != want.xxh3)
    throw Error(fmt::format("{}: checksum {:016x} does not match manifest.json ({:016x})", file,
                            got.xxh3, want.xxh3),
                kDamaged);
}

std::string read_checked(const std::string& file, const FileEntry& want) {
  std::string buf = read_file(file);
  check_sum(file, want, sum_bytes(buf.data(), buf.size()));
  return buf;
}

}  // namespace snap::image::io
