#include "tracer/file_pages.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/core.h>

#include "base/file_extents.h"

namespace snap {

namespace {
using image::kPageSize;
constexpr size_t kChunk = 1 << 20;  // read and stored at a time
}  // namespace

ScopedFd open_for_reading(const std::string& path, int flags) {
  flags |= O_RDONLY | O_CLOEXEC | O_NONBLOCK;
  ScopedFd fd(::open(path.c_str(), flags | O_NOATIME));
  if (!fd && errno != EWOULDBLOCK) fd.reset(::open(path.c_str(), flags));
  return fd;
}

ScopedFd open_mapped_file(pid_t pid, const image::Mapping& m) {
  for (const std::string& path : {fmt::format("/proc/{}/root{}", pid, m.path), m.path}) {
    ScopedFd fd = open_for_reading(path, O_NOFOLLOW);
    struct stat st {};
    if (fd && ::fstat(fd.get(), &st) == 0 && static_cast<uint64_t>(st.st_dev) == m.dev &&
        static_cast<uint64_t>(st.st_ino) == m.inode)
      return fd;
  }
  return {};
}

bool read_file_pages(int fd, uint64_t from, uint64_t to, uint64_t start, const PageSink& sink,
                     std::string* why) {
  std::vector<uint8_t> buf(kChunk);
  uint64_t next = from;  // the first byte (a page's) not stored yet
  bool ok = true;
  for_each_data_range(fd, from, to, [&](uint64_t data, uint64_t end) -> uint64_t {
    // Whole pages: a range's first page may hold the end of the one before.
    uint64_t off = std::max(next, data / kPageSize * kPageSize);
    while (off < end) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, end - off));
      size_t got = 0;
      while (got < want) {
        ssize_t n = ::pread(fd, buf.data() + got, want - got, static_cast<off_t>(off + got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          *why = fmt::format("reading it at offset {}: {}", off + got, std::strerror(errno));
          ok = false;
          return to;
        }
        if (n == 0) break;  // shorter by now: the rest is zeros
        got += static_cast<size_t>(n);
      }
      const size_t npages = (want + kPageSize - 1) / kPageSize;
      std::memset(buf.data() + got, 0, npages * kPageSize - got);
      sink(image::kFilePagesPid, start, start + off, buf.data(), npages);
      off += npages * kPageSize;
    }
    next = std::max(next, off);
    return next;
  });
  return ok;
}

}  // namespace snap
