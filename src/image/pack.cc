#include "image/pack.h"

#include <lz4.h>
#include <xxhash.h>

#include <string_view>

#include <fmt/core.h>

#include "base/error.h"

namespace snap::image {

const uint8_t* decode_block(const Pack& pk, uint64_t b, const disk::BlockHeader& h,
                            const uint8_t* stored, uint8_t* out) {
  const disk::IndexBlock& e = pk.blocks[b];
  auto bad = [&](std::string_view what) {
    throw Error(fmt::format("{}: block {} (offset {}): {}", pk.data_path, b, e.offset, what),
                kDamagedHint);
  };
  if (h.magic != disk::kBlockMagic || h.block != b || h.npages != e.npages ||
      h.flags != e.flags || h.stored_len != e.stored_len || h.raw_len != h.npages * kPageSize ||
      ((h.flags & disk::kBlockRaw) && h.stored_len != h.raw_len))
    bad("header does not match pages.idx");
  if (XXH3_64bits(stored, h.stored_len) != h.checksum) bad("checksum mismatch");
  if (h.flags & disk::kBlockRaw) return stored;
  int n = LZ4_decompress_safe(reinterpret_cast<const char*>(stored), reinterpret_cast<char*>(out),
                              static_cast<int>(h.stored_len),
                              static_cast<int>(disk::kBlockRawBytes));
  if (n != static_cast<int>(h.raw_len)) bad("does not decompress");
  return out;
}

}  // namespace snap::image
