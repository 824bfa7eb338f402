#include "image/range_reader.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <new>

#include <fmt/core.h>

#include "base/error.h"
#include "image/file_io.h"

#ifndef SYS_cachestat
#define SYS_cachestat 451
#endif

namespace snap::image {

namespace {

constexpr uint64_t kAlign = ReadBuffer::kAlign;

uint64_t round_down(uint64_t v) { return v & ~(kAlign - 1); }
uint64_t round_up(uint64_t v) { return round_down(v + kAlign - 1); }

// The kernel's (linux/mman.h, 6.5+).
struct CachestatRange {
  uint64_t off, len;
};
struct Cachestat {
  uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

}  // namespace

ReadBuffer::ReadBuffer(size_t range) : size_(round_up(range) + 2 * kAlign) {
  void* p = std::aligned_alloc(kAlign, size_);
  if (!p) throw std::bad_alloc();
  data_.reset(static_cast<uint8_t*>(p));
}

void ReadBuffer::Free::operator()(uint8_t* p) const { std::free(p); }

RangeReader::RangeReader(const std::string& path, int fd) : path_(path), fd_(fd) {
  direct_fd_.reset(::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
  direct_ok_ = direct_fd_.valid();
}

bool RangeReader::cached(uint64_t off, size_t len) const {
  uint64_t first = round_down(off), end = round_up(off + len);
  CachestatRange range{first, end - first};
  Cachestat cs{};
  if (::syscall(SYS_cachestat, fd_, &range, &cs, 0) < 0) return false;
  // The last page of the file may be short: count pages, not bytes.
  return cs.nr_cache * kAlign >= end - first - kAlign + 1;
}

const uint8_t* RangeReader::read(uint64_t off, size_t len, ReadBuffer& buf) {
  if (direct_ok_.load(std::memory_order_relaxed) && !cached(off, len)) {
    if (const uint8_t* p = read_direct(off, len, buf)) return p;
  }
  io::pread_exact(fd_, buf.data(), len, static_cast<off_t>(off), path_);
  return buf.data();
}

// nullptr when the file system refuses O_DIRECT (then it is not tried again).
const uint8_t* RangeReader::read_direct(uint64_t off, size_t len, ReadBuffer& buf) {
  uint64_t first = round_down(off), end = round_up(off + len);
  uint64_t done = 0;  // bytes from `first`
  while (first + done < off + len) {
    ssize_t n = ::pread(direct_fd_.get(), buf.data() + done, end - first - done,
                        static_cast<off_t>(first + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EINVAL && done == 0) {
      direct_ok_ = false;
      return nullptr;
    }
    if (n < 0) throw SysError(fmt::format("read({})", path_), errno);
    if (n == 0) break;
    done += static_cast<uint64_t>(n);
    if (done % kAlign) break;  // unaligned from here on
  }
  // What is left after a short read (the end of the file, or a file system
  // that stops early) through the page cache; that says if the file ends.
  if (first + done < off + len)
    io::pread_exact(fd_, buf.data() + done, off + len - (first + done),
                    static_cast<off_t>(first + done), path_);
  return buf.data() + (off - first);
}

}  // namespace snap::image
