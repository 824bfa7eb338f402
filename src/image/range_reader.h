// Reading byte ranges of one file of the image the cheapest way: from the
// page cache when all of the range is there already (cachestat), else with
// O_DIRECT straight into the caller's buffer, so that a cold read neither
// fills the page cache nor copies out of it. Where the file system refuses
// O_DIRECT, every read goes through the page cache. Safe to use from
// several threads at once.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "base/scoped_fd.h"

namespace snap::image {

// A buffer for RangeReader::read(): aligned for O_DIRECT.
class ReadBuffer {
 public:
  static constexpr size_t kAlign = 4096;
  // Room for a range of up to `range` bytes wherever it starts.
  explicit ReadBuffer(size_t range);
  uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  size_t size_;
  std::unique_ptr<uint8_t, Free> data_;
};

class RangeReader {
 public:
  // `fd`: the file opened for buffered reads (not owned); `path` names it
  // in errors and is opened once more with O_DIRECT.
  RangeReader(const std::string& path, int fd);

  // Reads [off, off + len) into buf (built for at least len); returns where
  // the bytes start in it. Throws like io::pread_exact.
  const uint8_t* read(uint64_t off, size_t len, ReadBuffer& buf);

 private:
  bool cached(uint64_t off, size_t len) const;
  const uint8_t* read_direct(uint64_t off, size_t len, ReadBuffer& buf);

  std::string path_;
  int fd_;
  ScopedFd direct_fd_;
  std::atomic<bool> direct_ok_{false};
};

}  // namespace snap::image
