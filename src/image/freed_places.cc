#include "image/freed_places.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/core.h>

#include "base/error.h"
#include "base/parallel.h"
#include "image/file_io.h"
#include "image/format.h"

namespace snap::image {

namespace {
// Threads reading the old pages at the commit: each read waits for the
// disk (pages.bin was written around the page cache), so several at once.
constexpr unsigned kReaders = 8;
}  // namespace

void FreedPlaces::reserve(size_t extra) {
  const size_t npages = std::min(held_data_.size() / kPageSize + extra, kMaxHeld);
  if (npages * kPageSize <= held_data_.size()) return;
  HugeBuffer more(npages * kPageSize);
  std::memset(more.data(), 0, more.size());  // touched now, not when a page comes
  std::copy_n(held_data_.data(), held_.size() * kPageSize, more.data());
  held_data_ = std::move(more);
}

std::optional<uint64_t> FreedPlaces::take(const uint8_t* page, const Hash128& h) {
  if ((held_.size() + 1) * kPageSize > held_data_.size()) return std::nullopt;
  while (!free_.empty()) {
    const uint64_t u = free_.back();
    free_.pop_back();
    if (u < shared_.size() && shared_[u]) continue;  // found equal to a page since
    std::copy_n(page, kPageSize, held_data_.data() + held_.size() * kPageSize);
    held_.push_back(u);
    now_[u] = h;
    ++taken_;
    return u;
  }
  return std::nullopt;
}

void FreedPlaces::write(std::vector<Pack::Block>& blocks) {
  if (held_.empty()) return;
  std::vector<uint64_t> first(blocks.size());  // per block: its first unique page
  for (size_t b = 1; b < blocks.size(); ++b) first[b] = first[b - 1] + blocks[b - 1].npages;
  // A place taken more than once holds the last page given it.
  std::unordered_map<uint64_t, size_t> last;  // place -> its last page held
  for (size_t i = 0; i < held_.size(); ++i) last[held_[i]] = i;
  struct Place {
    const uint8_t* page;
    Pack::Block* block;
    uint32_t slot;
    off_t at;
    uint64_t old_term = 0;  // page_sum of what the place holds now
  };
  std::vector<Place> places;
  places.reserve(last.size());
  for (const auto& [u, i] : last) {
    const size_t b = static_cast<size_t>(std::upper_bound(first.begin(), first.end(), u) -
                                         first.begin()) - 1;
    Pack::Block& blk = blocks[b];
    const auto slot = static_cast<uint32_t>(u - first[b]);
    if (!(blk.flags & disk::kBlockPageSums) || slot >= blk.npages)
      throw Error(fmt::format("{}: page {} was to be written over in block {}, which is not a "
                              "raw block holding it",
                              path_, u, b));
    places.push_back({held_data_.data() + i * kPageSize, &blk, slot,
                      static_cast<off_t>(blk.offset + uint64_t{slot} * kPageSize)});
  }
  std::sort(places.begin(), places.end(),
            [](const Place& a, const Place& b) { return a.at < b.at; });
  // Through the page cache (pages.bin was written around it: O_DIRECT wants
  // aligned places); the caller's fsync of the file writes these out too.
  ScopedFd fd = io::open_file(path_, O_RDWR);
  // The old pages' checksum terms, read several at a time (which also brings
  // the file's pages around a place that is not aligned to them into the
  // cache, where the write below would read them one after another).
  parallel_for(places.size(), std::min<unsigned>(kReaders, static_cast<unsigned>(places.size())),
               [&](size_t i) {
                 uint8_t old[kPageSize];
                 io::pread_exact(fd.get(), old, kPageSize, places[i].at, path_);
                 places[i].old_term = page_sum(old, places[i].slot);
               });
  // In the file's order (~25 us a page here, most of it ext4's write).
  for (const Place& p : places) {
    p.block->checksum += page_sum(p.page, p.slot) - p.old_term;
    const ssize_t n = ::pwrite(fd.get(), p.page, kPageSize, p.at);
    if (n != static_cast<ssize_t>(kPageSize))
      throw SysError(fmt::format("pwrite({} at offset {})", path_, p.at), n < 0 ? errno : EIO);
  }
  held_.clear();
}

}  // namespace snap::image
