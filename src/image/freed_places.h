// The places in pages.bin of pages a plain image's writer was given and then
// told to forget (memory read before the stop and written again before it,
// job/memory_precopy.h; a data file's pages likewise): pages given later
// take them, instead of being appended, so that what was forgotten does not
// stay in the image, referred to by nothing. Only a place in a raw block
// already written (its block's checksum is its pages' sum: pack.h) and
// referred to by one run of the pagemap (no deduplicated page shares it)
// is taken. The pages that take places are held (kMaxHeld at most) and
// written over them at the commit, once pages.bin is complete.
// Internal to src/image (ImageWriter); guarded by the writer's mutex.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"
#include "image/pack.h"
#include "image/page_table.h"

namespace snap::image {

class FreedPlaces {
 public:
  // Pages held for the commit, at most (snap's memory: 32 MiB).
  static constexpr size_t kMaxHeld = 8192;

  // Unique page `u` is referred to again (a page found equal to it): its
  // place is never taken.
  void shared(uint64_t u) {
    if (u >= shared_.size()) shared_.resize(u + 1);
    shared_[u] = true;
  }
  // Whether the page table's `h` -> `u` is out of date: u's place was taken
  // by a page of another hash.
  bool stale(uint64_t u, const Hash128& h) const {
    auto it = now_.find(u);
    return it != now_.end() && !(it->second == h);
  }
  // The page store the places are in (before freed()).
  void set_file(std::string path) { path_ = std::move(path); }
  // The one reference to unique page `u` was forgotten; `raw_offset`: where
  // u is in pages.bin, if it is there already, in a raw block
  // (BlockPipeline::raw_offset). Its place is read ahead (the commit reads
  // it back: write()). Throws SysError when pages.bin cannot be opened.
  void freed(uint64_t u, std::optional<uint64_t> raw_offset);
  // A place for the page at `page` (hash `h`), which is copied to be
  // written there at the commit; nullopt when none is free (or kMaxHeld
  // pages are held already).
  std::optional<uint64_t> take(const uint8_t* page, const Hash128& h);

  // At the commit, with pages.bin complete and `blocks` its blocks: writes
  // the held pages over their places and updates their blocks' checksums.
  // The file is fsynced by the caller. Throws SysError.
  void write(std::vector<Pack::Block>& blocks);

  // Pages given places freed (that pages.bin does not store twice).
  uint64_t taken() const { return taken_; }

 private:
  std::string path_;
  ScopedFd fd_;                                    // path_, read and written
  std::vector<bool> shared_;                       // by unique page
  std::vector<uint64_t> free_;                     // freed places, maybe shared since
  std::unordered_map<uint64_t, Hash128> now_;      // taken place -> its page's hash
  std::deque<std::pair<uint64_t, std::vector<uint8_t>>> held_;  // place, page
  uint64_t taken_ = 0;
};

}  // namespace snap::image
