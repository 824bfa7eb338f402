// The writer's page table: page hash -> ref of the stored page, for
// deduplication while a dump runs; at commit, a series pack's pages.idx
// hash entries are made from it without a second copy.
#pragma once

#include <xxhash.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>

#include "base/huge_buffer.h"
#include "image/checkpoint.h"

namespace snap::image {

struct Hash128 {
  uint64_t lo = 0, hi = 0;
  bool operator==(const Hash128&) const = default;
};

inline Hash128 hash_page(const uint8_t* p) {
  XXH128_hash_t h = XXH3_128bits(p, kPageSize);
  return {h.low64, h.high64};
}

// Page hash -> ref of the stored page: open addressing, linear probing, at
// most three quarters full. 24 bytes an entry (32 to 64 per stored page),
// in huge pages the kernel hands out zeroed (an all-zero entry is empty:
// refs are kept plus one). At commit its own buffer becomes the sorted
// index (sorted_in_place), so writing pages.idx takes no second copy.
class PageTable {
 public:
  PageTable() : buf_(kInitial * sizeof(Entry)), cap_(kInitial) {}

  std::optional<uint64_t> find(const Hash128& h) const {
    if (spent_) throw std::logic_error("PageTable::find after sorted_in_place");
    const Entry* e = entries();
    for (size_t i = h.lo & mask(); ; i = (i + 1) & mask()) {
      if (e[i].ref1 == 0) return std::nullopt;
      if (e[i].lo == h.lo && e[i].hi == h.hi) return e[i].ref1 - 1;
    }
  }

  // `h` now refers to `ref`: added, or, where it was in the table already,
  // changed (a place it referred to holds another page now: FreedPlaces).
  // One probe; the table grows first where an addition might need it.
  void set(const Hash128& h, uint64_t ref) {
    if (spent_) throw std::logic_error("PageTable::set after sorted_in_place");
    if ((size_ + 1) * 4 > cap_ * 3) grow();
    Entry* e = entries();
    size_t i = h.lo & mask();
    for (; e[i].ref1; i = (i + 1) & mask())
      if (e[i].lo == h.lo && e[i].hi == h.hi) {
        e[i].ref1 = ref + 1;
        return;
      }
    e[i] = {h.lo, h.hi, ref + 1};
    size_++;
  }

  size_t size() const { return size_; }

  // The entries moved to the front of the table's buffer and sorted by
  // hash (hi, then lo); each one's `ref1` becomes its ref. The table can
  // look nothing up afterwards (size() still counts the entries).
  struct Sorted {
    uint64_t lo, hi, ref;
  };
  std::span<Sorted> sorted_in_place() {
    Entry* e = entries();
    size_t k = 0;
    for (size_t i = 0; i < cap_; ++i)
      if (e[i].ref1) e[k++] = {e[i].lo, e[i].hi, e[i].ref1 - 1};
    auto* out = reinterpret_cast<Sorted*>(e);
    std::sort(out, out + k, [](const Sorted& a, const Sorted& b) {
      return a.hi != b.hi ? a.hi < b.hi : a.lo < b.lo;
    });
    spent_ = true;
    return {out, k};
  }

 private:
  struct Entry {
    uint64_t lo, hi, ref1;  // ref1: ref + 1, 0 when empty
  };
  static constexpr size_t kInitial = size_t{1} << 16;

  Entry* entries() const { return reinterpret_cast<Entry*>(buf_.data()); }
  size_t mask() const { return cap_ - 1; }

  static void place(Entry* e, size_t mask, const Entry& x) {
    size_t i = x.lo & mask;
    while (e[i].ref1) i = (i + 1) & mask;
    e[i] = x;
  }

  void grow() {
    HugeBuffer bigger(cap_ * 2 * sizeof(Entry));
    Entry* to = reinterpret_cast<Entry*>(bigger.data());
    const Entry* from = entries();
    for (size_t i = 0; i < cap_; ++i)
      if (from[i].ref1) place(to, cap_ * 2 - 1, from[i]);
    buf_ = std::move(bigger);
    cap_ *= 2;
  }

  HugeBuffer buf_;
  size_t cap_;
  size_t size_ = 0;
  bool spent_ = false;
};

}  // namespace snap::image
