#include "tracer/pagemap.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fmt/core.h>
#include <memory>

#include "base/error.h"
#include "image/checkpoint.h"

namespace snap::pagemap {

namespace {
constexpr unsigned long kPagemapScan = _IOWR('f', 16, ScanArg);
constexpr size_t kRegionBatch = 4096;  // regions per PAGEMAP_SCAN call
}  // namespace

int scan(int pagemap_fd, uint64_t start, uint64_t end, uint64_t flags, uint64_t mask, uint64_t anyof,
         uint64_t ret_mask, const std::function<void(const Region&)>& fn) {
  // Reused: a dump scans once per mapping, thousands of times.
  thread_local std::unique_ptr<Region[]> vec(new Region[kRegionBatch]);
  uint64_t pos = start, seen = start;
  while (pos < end) {
    ScanArg a{};
    a.size = sizeof a;
    a.flags = flags;
    a.start = pos;
    a.end = end;
    a.vec = reinterpret_cast<uint64_t>(vec.get());
    a.vec_len = kRegionBatch;
    a.category_mask = mask;
    a.category_anyof_mask = anyof;
    a.return_mask = ret_mask;
    int n = ::ioctl(pagemap_fd, kPagemapScan, &a);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    // A call that fills the vector may stop (walk_end) before the end of
    // the last region it returned, and the next one returns that region's
    // pages again: each page goes out once.
    for (int i = 0; i < n; i++) {
      Region r = vec[i];
      r.start = std::max(r.start, seen);
      if (r.start >= r.end) continue;
      seen = r.end;
      fn(r);
    }
    if (a.walk_end <= pos) return EIO;  // no progress: should not happen
    pos = a.walk_end;
  }
  return 0;
}

int scan(int pagemap_fd, uint64_t start, uint64_t end, uint64_t flags, uint64_t mask, uint64_t anyof,
         uint64_t ret_mask, std::vector<Region>& out) {
  return scan(pagemap_fd, start, end, flags, mask, anyof, ret_mask,
              [&](const Region& r) { out.push_back(r); });
}

bool scan_unsupported(int err) { return err == ENOTTY || err == EINVAL || err == EOPNOTSUPP; }

void read_chunks(int fd, const std::string& path, uint64_t start, uint64_t end,
                 const std::function<void(uint64_t, const uint64_t*, size_t)>& fn, size_t chunk) {
  const uint64_t total = (end - start) / image::kPageSize;
  if (total == 0) return;
  if (chunk == 0) chunk = 1;
  std::vector<uint64_t> entries(std::min<uint64_t>(chunk, total));
  for (uint64_t first = 0; first < total;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, total - first)), done = 0;
    while (done < n) {
      off_t off = static_cast<off_t>((start / image::kPageSize + first + done) * sizeof(uint64_t));
      ssize_t r = ::pread(fd, entries.data() + done, (n - done) * sizeof(uint64_t), off);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0)
        throw SysError(fmt::format("read {} at {:#x}", path, start + (first + done) * image::kPageSize),
                       r < 0 ? errno : EIO);
      done += static_cast<size_t>(r) / sizeof(uint64_t);
    }
    fn(start + first * image::kPageSize, entries.data(), n);
    first += n;
  }
}

std::vector<uint64_t> held_pages(int fd, const std::string& path,
                                 const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  constexpr uint64_t kPage = image::kPageSize;
  constexpr uint64_t kGap = 64ull << 20;  // walked through, not around
  constexpr uint64_t kCategories = kPageIsPresent | kPageIsSwapped;
  std::vector<uint64_t> held(ranges.size(), 0);
  for (size_t first = 0; first < ranges.size();) {
    size_t last = first;
    while (last + 1 < ranges.size() && ranges[last + 1].first - ranges[last].second <= kGap) last++;
    const uint64_t lo = ranges[first].first, hi = ranges[last].second;
    size_t at = first;  // regions come ascending
    auto count = [&](uint64_t start, uint64_t end) {
      for (; at <= last && start < end; at++) {
        const auto [rs, re] = ranges[at];
        if (end <= rs) return;
        if (start >= re) continue;
        held[at] += (std::min(end, re) - std::max(start, rs)) / kPage;
        if (end < re) return;
      }
    };
    int e = scan(fd, lo, hi, 0, 0, kCategories, kCategories,
                 [&](const Region& r) { count(r.start, r.end); });
    if (e != 0 && !scan_unsupported(e))
      throw SysError(fmt::format("ioctl({}, PAGEMAP_SCAN, {:#x}-{:#x})", path, lo, hi), e);
    if (e != 0) {  // before Linux 6.7: the entries of each range
      for (size_t k = first; k <= last; k++) {
        at = k;
        read_chunks(fd, path, ranges[k].first, ranges[k].second,
                    [&](uint64_t a, const uint64_t* entries, size_t n) {
                      for (size_t j = 0; j < n; j++)
                        if (entries[j] & (kPresent | kSwapped))
                          count(a + j * kPage, a + (j + 1) * kPage);
                    });
      }
    }
    first = last + 1;
  }
  return held;
}

}  // namespace snap::pagemap
