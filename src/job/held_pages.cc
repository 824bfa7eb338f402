#include "job/held_pages.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "image/checkpoint.h"

namespace snap::job {

HeldPages::HeldPages(size_t max_bytes, size_t warm_bytes) : buf_(max_bytes) {
  runs_.reserve(1024);
  const size_t warm = std::min(warm_bytes, buf_.size());
  if (warm && ::madvise(buf_.data(), warm, MADV_POPULATE_WRITE) != 0)  // Linux 5.14
    for (size_t at = 0; at < warm; at += image::kPageSize) buf_.data()[at] = 0;
}

PageSink HeldPages::sink(pid_t owner, PageSink next) {
  return [this, owner, next = std::move(next)](pid_t pid, uint64_t mapping_start, uint64_t addr,
                                               const uint8_t* data, size_t npages) {
    const size_t len = npages * image::kPageSize;
    size_t at = 0;
    {
      std::lock_guard lock(mu_);
      if (buf_.size() - used_ < len) {
        passed_ += len;
        at = SIZE_MAX;
      } else {
        at = used_;
        used_ += len;
        runs_.push_back({owner, mapping_start, addr, npages, at});
      }
    }
    // Copied outside the lock: each run has its own place.
    if (at == SIZE_MAX)
      next(pid, mapping_start, addr, data, npages);
    else
      std::memcpy(buf_.data() + at, data, len);
  };
}

void HeldPages::store_all(const PageSink& store) {
  std::vector<Run> runs;
  {
    std::lock_guard lock(mu_);
    runs.swap(runs_);
  }
  for (const Run& r : runs) store(r.owner, r.mapping_start, r.addr, buf_.data() + r.offset, r.npages);
  std::lock_guard lock(mu_);
  used_ = 0;
}

size_t HeldPages::bytes_held() const {
  std::lock_guard lock(mu_);
  return used_;
}

size_t HeldPages::bytes_passed_on() const {
  std::lock_guard lock(mu_);
  return passed_;
}

}  // namespace snap::job
