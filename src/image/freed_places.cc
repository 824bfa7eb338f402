#include "image/freed_places.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>

#include <fmt/core.h>

#include "base/error.h"
#include "base/scoped_fd.h"
#include "image/file_io.h"
#include "image/format.h"

namespace snap::image {

std::optional<uint64_t> FreedPlaces::take(const uint8_t* page, const Hash128& h) {
  if (held_.size() >= kMaxHeld) return std::nullopt;
  while (!free_.empty()) {
    const uint64_t u = free_.back();
    free_.pop_back();
    if (u < shared_.size() && shared_[u]) continue;  // found equal to a page since
    held_.emplace_back(u, std::vector<uint8_t>(page, page + kPageSize));
    now_[u] = h;
    ++taken_;
    return u;
  }
  return std::nullopt;
}

void FreedPlaces::write(const std::string& path, std::vector<Pack::Block>& blocks) {
  if (held_.empty()) return;
  std::vector<uint64_t> first(blocks.size());  // per block: its first unique page
  for (size_t b = 1; b < blocks.size(); ++b) first[b] = first[b - 1] + blocks[b - 1].npages;
  // Through the page cache (pages.bin was written around it: O_DIRECT wants
  // aligned places); the caller's fsync of the file writes these out too.
  ScopedFd fd = io::open_file(path, O_RDWR);
  std::vector<uint8_t> old(kPageSize);
  // In the order taken: a place taken twice holds the last page given it.
  for (const auto& [u, page] : held_) {
    const size_t b = static_cast<size_t>(std::upper_bound(first.begin(), first.end(), u) -
                                         first.begin()) - 1;
    Pack::Block& blk = blocks[b];
    const auto slot = static_cast<uint32_t>(u - first[b]);
    if (!(blk.flags & disk::kBlockPageSums) || slot >= blk.npages)
      throw Error(fmt::format("{}: page {} was to be written over in block {}, which is not a "
                              "raw block holding it",
                              path, u, b));
    const auto at = static_cast<off_t>(blk.offset + uint64_t{slot} * kPageSize);
    io::pread_exact(fd.get(), old.data(), kPageSize, at, path);
    blk.checksum += page_sum(page.data(), slot) - page_sum(old.data(), slot);
    const ssize_t n = ::pwrite(fd.get(), page.data(), kPageSize, at);
    if (n != static_cast<ssize_t>(kPageSize))
      throw SysError(fmt::format("pwrite({}, page {} at offset {})", path, u, at),
                     n < 0 ? errno : EIO);
  }
  held_.clear();
}

}  // namespace snap::image
