// /proc/PID/pagemap, read so that the cost follows the pages a range holds,
// not its size: the PAGEMAP_SCAN ioctl (Linux 6.7) names the ranges of a
// category, and raw entries are read in bounded chunks (a 16 TiB reservation
// has 4 Gi entries: 32 GiB, never held at once).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace snap::pagemap {

// The kernel interface of Linux 6.7, spelled out because the build
// machine's headers predate it (<linux/fs.h>).
struct ScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
  uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
struct Region {
  uint64_t start, end, categories;
};
constexpr uint64_t kScanWpMatching = 1 << 0;   // PM_SCAN_WP_MATCHING
constexpr uint64_t kScanCheckWpAsync = 1 << 1;  // PM_SCAN_CHECK_WPASYNC
constexpr uint64_t kPageIsWritten = 1 << 1;
constexpr uint64_t kPageIsFile = 1 << 2;
constexpr uint64_t kPageIsPresent = 1 << 3;
constexpr uint64_t kPageIsSwapped = 1 << 4;
constexpr uint64_t kPageIsPfnZero = 1 << 5;  // the shared zero page

// Raw entry bits; kGuardRegion (PM_GUARD_REGION, Linux 6.15): a guard
// region's page (MADV_GUARD_INSTALL), shown swapped too.
constexpr uint64_t kPresent = 1ull << 63, kSwapped = 1ull << 62, kFilePage = 1ull << 61;
constexpr uint64_t kGuardRegion = 1ull << 58;
constexpr uint64_t kUffdWp = 1ull << 57;  // PM_UFFD_WP: write-protected (a page or a marker)
// PAGEMAP_SCAN's category of guard region pages (Linux 6.15).
constexpr uint64_t kPageIsGuard = 1 << 8;

// Entries read per pread of the chunked reads: 512 KiB.
constexpr size_t kChunkEntries = 64 * 1024;

// One PAGEMAP_SCAN walk over [start, end), as many ioctls as the regions
// need; each region goes to `fn` as it comes. Returns 0, or the errno of the
// failed call (ENOTTY / EINVAL: the kernel has no PAGEMAP_SCAN).
int scan(int pagemap_fd, uint64_t start, uint64_t end, uint64_t flags, uint64_t mask, uint64_t anyof,
         uint64_t ret_mask, const std::function<void(const Region&)>& fn);
// Same, collected.
int scan(int pagemap_fd, uint64_t start, uint64_t end, uint64_t flags, uint64_t mask, uint64_t anyof,
         uint64_t ret_mask, std::vector<Region>& out);
// Whether `err` from scan() means the ioctl does not exist here.
bool scan_unsupported(int err);

// Raw entries of [start, end), at most `chunk` at a time: `fn(addr, entries,
// n)` gets the entries of the n pages from addr. Throws on a read error
// (`path` names the file in the message).
void read_chunks(int pagemap_fd, const std::string& path, uint64_t start, uint64_t end,
                 const std::function<void(uint64_t addr, const uint64_t* entries, size_t n)>& fn,
                 size_t chunk = kChunkEntries);

// Pages present or swapped in each of `ranges` (ascending, disjoint), from
// as few walks as their closeness allows: ranges less than 64 MiB apart
// share one PAGEMAP_SCAN walk (the stacks glibc gives threads sit side by
// side); without PAGEMAP_SCAN, the raw entries of each range. Throws on a
// read error (`path` names the file in the message).
std::vector<uint64_t> held_pages(int pagemap_fd, const std::string& path,
                                 const std::vector<std::pair<uint64_t, uint64_t>>& ranges);

}  // namespace snap::pagemap
