// One page store of an image (FORMAT.md): pages.bin + pages.idx of a plain
// image, or one pack of a series (packs/N.pack + packs/N.idx); how a block
// of it is encoded, and the checks every block read from it passes.
// Internal to src/image.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <xxhash.h>

#include "base/scoped_fd.h"
#include "image/format.h"
#include "image/manifest.h"

namespace snap::image {

inline constexpr const char* kDamagedHint = "the image is damaged; it cannot be restored";

struct Pack {
  // One block as the index describes it, whichever the version.
  struct Block {
    uint64_t offset = 0;      // of its first byte in the data file (its header, to version 6)
    uint64_t checksum = 0;    // of its stored bytes (version 7; to 6 it is in the header;
                            // kBlockPageSums: raw_block_checksum)
    uint32_t stored_len = 0;  // stored bytes, the header not counted
    uint32_t npages = 0;
    uint16_t flags = 0;
  };
  std::string name;                 // series pack number; empty for a plain image
  std::string data_path, index_path;
  FileEntry data, index;            // as the manifest records them
  bool headers = false;             // to version 6: a BlockHeader before each block
  std::vector<Block> blocks;
  std::vector<uint64_t> first_page;  // per block: its first unique page number
  uint64_t npages = 0;              // unique pages
  std::vector<disk::IndexPage7> pages;  // sorted by hash; empty where the index has no hashes
  uint64_t base = 0;                // page ref of its unique page 0
  ScopedFd fd;                      // data_path, read with pread (any thread)

  uint64_t header_bytes() const { return headers ? sizeof(disk::BlockHeader) : 0; }
  // Bytes block b takes in the data file, its header included.
  uint64_t block_bytes(uint64_t b) const { return header_bytes() + blocks[b].stored_len; }
  // The block holding unique page u (< npages), and u's slot in it.
  std::pair<uint64_t, uint32_t> where(uint64_t u) const;
};

// The pages of block `b` of `pk`, whose bytes in the file (block_bytes(b),
// from its offset) are at `at`: checks the header (to version 6) against
// the index, the checksum and, for a compressed block, that it
// decompresses to exactly its pages. Returns its stored bytes themselves
// for a block stored raw (no copy), else `out` (disk::kBlockRawBytes)
// holding the decompressed pages. Throws Error "FILE: block B (offset O):
// what" on damage.
const uint8_t* decode_block(const Pack& pk, uint64_t b, const uint8_t* at, uint8_t* out);

// The checksum of a raw block of `npages` pages at `pages` whose flags have
// kBlockPageSums: the sum (mod 2^64) of page_sum(page i, i). A page written
// over in place changes it by the difference of its two terms.
inline uint64_t page_sum(const uint8_t* page, uint32_t slot) {
  return XXH3_64bits_withSeed(page, kPageSize, slot);
}
uint64_t raw_block_checksum(const uint8_t* pages, uint32_t npages);

// A plain image's pages.bin checksum in its manifest, from version 16: the
// XXH3-64 of its blocks' checksums (u64 little-endian, block 0 first).
// Every block is checked against its own; this ties them to the manifest.
uint64_t blocks_checksum(const std::vector<Pack::Block>& blocks);

// Room for a block compressed by lz4 (LZ4_compressBound of a full block),
// rounded to pages.
inline constexpr size_t kPackedBytes =
    (disk::kBlockRawBytes + disk::kBlockRawBytes / 255 + 16 + kPageSize - 1) / kPageSize * kPageSize;

// Whether lz4 finds nothing to take out of the `npages` pages at `raw`,
// judged from 1 KiB at four places (about 1 % of compressing them all):
// then the block is stored raw without trying (on random data lz4 gives up
// early anyway, but not for free).
bool looks_incompressible(const uint8_t* raw, uint32_t npages);

// The `npages` pages at `raw` (at most kBlockPages), as they are stored:
// with `lz4`, compressed into `packed` (kPackedBytes) if that shrinks them,
// else `raw` itself. Fills in `e` but its offset; the checksum only for a
// compressed block (raw ones are summed as they are joined: BlockAppender).
const uint8_t* encode_block(const uint8_t* raw, uint32_t npages, bool lz4, uint8_t* packed,
                            Pack::Block& e);

}  // namespace snap::image
