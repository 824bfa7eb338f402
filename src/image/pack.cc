#include "image/pack.h"

#include <lz4.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <string_view>

#include <fmt/core.h>

#include "base/error.h"

namespace snap::image {

std::pair<uint64_t, uint32_t> Pack::where(uint64_t u) const {
  // The last block starting at or before u (u < npages: checked by callers).
  auto it = std::upper_bound(first_page.begin(), first_page.end(), u);
  uint64_t b = static_cast<uint64_t>(it - first_page.begin()) - 1;
  return {b, static_cast<uint32_t>(u - first_page[b])};
}

const uint8_t* decode_block(const Pack& pk, uint64_t b, const uint8_t* at, uint8_t* out) {
  const Pack::Block& e = pk.blocks[b];
  auto bad = [&](std::string_view what) {
    throw Error(fmt::format("{}: block {} (offset {}): {}", pk.data_path, b, e.offset, what),
                kDamagedHint);
  };
  uint64_t checksum = e.checksum;
  const uint8_t* stored = at;
  if (pk.headers) {
    disk::BlockHeader h;
    std::memcpy(&h, at, sizeof h);
    if (h.magic != disk::kBlockMagic || h.block != b || h.npages != e.npages ||
        h.flags != e.flags || h.stored_len != e.stored_len || h.raw_len != h.npages * kPageSize)
      bad("header does not match pages.idx");
    checksum = h.checksum;
    stored += sizeof h;
  }
  // The index's entries were checked on open: a raw block's stored length
  // is its pages', a compressed one holds at most kBlockPages.
  const uint64_t sum = (e.flags & disk::kBlockPageSums)
                           ? raw_block_checksum(stored, e.npages)
                           : XXH3_64bits(stored, e.stored_len);
  if (sum != checksum) bad("checksum mismatch");
  if (e.flags & disk::kBlockRaw) return stored;
  int n = LZ4_decompress_safe(reinterpret_cast<const char*>(stored), reinterpret_cast<char*>(out),
                              static_cast<int>(e.stored_len),
                              static_cast<int>(disk::kBlockRawBytes));
  if (n < 0 || static_cast<uint64_t>(n) != e.npages * kPageSize) bad("does not decompress");
  return out;
}

uint64_t raw_block_checksum(const uint8_t* pages, uint32_t npages) {
  uint64_t sum = 0;
  for (uint32_t i = 0; i < npages; ++i) sum += page_sum(pages + size_t{i} * kPageSize, i);
  return sum;
}

uint64_t blocks_checksum(const std::vector<Pack::Block>& blocks) {
  std::vector<uint64_t> sums;
  sums.reserve(blocks.size());
  for (const auto& b : blocks) sums.push_back(b.checksum);  // x86_64: little-endian
  return XXH3_64bits(sums.data(), sums.size() * sizeof(uint64_t));
}

static_assert(kPackedBytes >= static_cast<size_t>(LZ4_COMPRESSBOUND(disk::kBlockRawBytes)));

bool looks_incompressible(const uint8_t* raw, uint32_t npages) {
  const size_t raw_len = size_t{npages} * kPageSize;
  char out[LZ4_COMPRESSBOUND(1024)];
  for (size_t k = 0; k < 4; ++k) {
    size_t at = (raw_len - 1024) / 3 * k / kPageSize * kPageSize;
    int n = LZ4_compress_default(reinterpret_cast<const char*>(raw + at), out, 1024, sizeof out);
    if (n > 0 && n < 1000) return false;
  }
  return true;
}

const uint8_t* encode_block(const uint8_t* raw, uint32_t npages, bool lz4, uint8_t* packed,
                            Pack::Block& e) {
  const int raw_len = static_cast<int>(npages * kPageSize);
  // On incompressible data lz4 notices early and skips ahead (a pass over
  // random data costs less than hashing it); such a block is stored raw.
  int n = lz4 ? LZ4_compress_default(reinterpret_cast<const char*>(raw),
                                     reinterpret_cast<char*>(packed), raw_len,
                                     static_cast<int>(kPackedBytes))
              : 0;
  e.npages = npages;
  if (n > 0 && n < raw_len) {
    e.flags = 0;
    e.stored_len = static_cast<uint32_t>(n);
    e.checksum = XXH3_64bits(packed, e.stored_len);
    return packed;
  }
  e.flags = disk::kBlockRaw;
  e.stored_len = static_cast<uint32_t>(raw_len);
  e.checksum = 0;
  return raw;
}

}  // namespace snap::image
