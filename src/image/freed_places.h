// The places in pages.bin of pages a plain image's writer was given and then
// told to forget (memory read before the stop and written again before it,
// job/memory_precopy.h; a data file's pages likewise, job/file_precopy.h;
// each reserves room for them): pages given later
// take them, instead of being appended, so that what was forgotten does not
// stay in the image, referred to by nothing. Only a place in a raw block
// already appended (its block's checksum is its pages' sum: pack.h) and
// referred to from one address only (no deduplicated page shares it) is
// taken. The pages that take places are held (in room reserved for them
// beforehand, kMaxHeld pages at most) and written over them at the commit,
// once pages.bin is complete (~30 us a page here).
// Internal to src/image (ImageWriter); guarded by the writer's mutex.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/huge_buffer.h"
#include "image/checkpoint.h"
#include "image/pack.h"
#include "image/page_table.h"

namespace snap::image {

class FreedPlaces {
 public:
  // Pages held for the commit, at most (snap's memory: 32 MiB).
  static constexpr size_t kMaxHeld = 8192;

  // Room for `extra` more pages (kMaxHeld in all at most; each pre-copy
  // asks for its own) to take places, made and touched now: pages are
  // given places only within it, so that a page given while the job is
  // stopped costs no page fault (~50 us each on this project's machine; a
  // first touch of a huge page may compact memory). Without it no place is
  // taken.
  void reserve(size_t extra);

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
  // The page store the places are in (before write()).
  void set_file(std::string path) { path_ = std::move(path); }
  // The one reference to unique page `u` was forgotten; `written_raw`: u
  // is in pages.bin already, in a raw block (BlockPipeline::written_raw).
  void freed(uint64_t u, bool written_raw) {
    if (written_raw && (u >= shared_.size() || !shared_[u])) free_.push_back(u);
  }
  // A place for the page at `page` (hash `h`), which is copied to be
  // written there at the commit; nullopt when none is free or the room
  // reserved is full.
  std::optional<uint64_t> take(const uint8_t* page, const Hash128& h);

  // At the commit, with pages.bin complete and `blocks` its blocks: writes
  // the held pages over their places and updates their blocks' checksums.
  // The file is fsynced by the caller. Throws SysError.
  void write(std::vector<Pack::Block>& blocks);

  // Pages given places freed (that pages.bin does not store twice).
  uint64_t taken() const { return taken_; }

 private:
  std::string path_;
  std::vector<bool> shared_;                       // by unique page
  std::vector<uint64_t> free_;                     // freed places, maybe shared since
  std::unordered_map<uint64_t, Hash128> now_;      // taken place -> its page's hash
  std::vector<uint64_t> held_;                     // the place of each page held
  HugeBuffer held_data_;                           // the pages held, in that order (reserve())
  uint64_t taken_ = 0;
};

}  // namespace snap::image
