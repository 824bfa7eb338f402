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

const uint8_t* encode_block(uint64_t block, const uint8_t* raw, uint32_t npages, bool lz4,
                            uint8_t* packed, disk::BlockHeader& h) {
  const int raw_len = static_cast<int>(npages * kPageSize);
  // On incompressible data lz4 notices early and skips ahead (a pass over
  // random data costs less than hashing it); such a block is stored raw.
  int n = lz4 ? LZ4_compress_default(reinterpret_cast<const char*>(raw),
                                     reinterpret_cast<char*>(packed), raw_len,
                                     static_cast<int>(kPackedBytes))
              : 0;
  h.magic = disk::kBlockMagic;
  h.npages = static_cast<uint16_t>(npages);
  h.raw_len = static_cast<uint32_t>(raw_len);
  h.block = block;
  const uint8_t* stored = raw;
  if (n > 0 && n < raw_len) {
    h.flags = 0;
    h.stored_len = static_cast<uint32_t>(n);
    stored = packed;
  } else {
    h.flags = disk::kBlockRaw;
    h.stored_len = static_cast<uint32_t>(raw_len);
  }
  h.checksum = XXH3_64bits(stored, h.stored_len);
  return stored;
}

}  // namespace snap::image
