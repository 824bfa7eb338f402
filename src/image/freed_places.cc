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

void FreedPlaces::freed(uint64_t u, std::optional<uint64_t> raw_offset) {
  if (!raw_offset || (u < shared_.size() && shared_[u])) return;
  free_.push_back(u);
  // Through the page cache (pages.bin is written around it: O_DIRECT wants
  // aligned places); the caller's fsync of the file writes these out too.
  if (!fd_) fd_ = io::open_file(path_, O_RDWR);
  // The commit reads the old page (its checksum terms; and a place that is
  // not aligned to the page cache's pages is read around anyway, to be
  // written): asked for now, so that the disk serves it while the dump goes
  // on rather than in a random read at the commit (O_DIRECT left none of
  // it cached; a part not written yet is dropped from the cache when it is).
  ::posix_fadvise(fd_.get(), static_cast<off_t>(*raw_offset & ~uint64_t{kPageSize - 1}),
                  2 * kPageSize, POSIX_FADV_WILLNEED);
}

void FreedPlaces::write(std::vector<Pack::Block>& blocks) {
  if (held_.empty()) return;
  std::vector<uint64_t> first(blocks.size());  // per block: its first unique page
  for (size_t b = 1; b < blocks.size(); ++b) first[b] = first[b - 1] + blocks[b - 1].npages;
  struct Place {
    size_t block;
    uint32_t slot;
    off_t at;
  };
  std::vector<Place> places;
  places.reserve(held_.size());
  for (const auto& [u, page] : held_) {
    const size_t b = static_cast<size_t>(std::upper_bound(first.begin(), first.end(), u) -
                                         first.begin()) - 1;
    const Pack::Block& blk = blocks[b];
    const auto slot = static_cast<uint32_t>(u - first[b]);
    if (!(blk.flags & disk::kBlockPageSums) || slot >= blk.npages)
      throw Error(fmt::format("{}: page {} was to be written over in block {}, which is not a "
                              "raw block holding it",
                              path_, u, b));
    places.push_back({b, slot, static_cast<off_t>(blk.offset + uint64_t{slot} * kPageSize)});
  }
  // In the file's order (the reads and the final fsync then go through it
  // once; ~25 us a page here, most of it the write); a place taken twice
  // keeps the order of its pages, and holds the last one given it.
  std::vector<size_t> order(held_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return places[a].at < places[b].at; });
  std::vector<uint8_t> old(kPageSize);
  for (size_t i : order) {
    const std::vector<uint8_t>& page = held_[i].second;
    Pack::Block& blk = blocks[places[i].block];
    const uint32_t slot = places[i].slot;
    const off_t at = places[i].at;
    const uint64_t u = held_[i].first;
    io::pread_exact(fd_.get(), old.data(), kPageSize, at, path_);
    blk.checksum += page_sum(page.data(), slot) - page_sum(old.data(), slot);
    const ssize_t n = ::pwrite(fd_.get(), page.data(), kPageSize, at);
    if (n != static_cast<ssize_t>(kPageSize))
      throw SysError(fmt::format("pwrite({}, page {} at offset {})", path_, u, at),
                     n < 0 ? errno : EIO);
  }
  held_.clear();
}

}  // namespace snap::image
