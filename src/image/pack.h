// One page store of an image (FORMAT.md): pages.bin + pages.idx of a plain
// image, or one pack of a series (packs/N.pack + packs/N.idx); how a block
// of it is encoded, and the checks every block read from it passes.
// Internal to src/image.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/scoped_fd.h"
#include "image/format.h"
#include "image/manifest.h"

namespace snap::image {

inline constexpr const char* kDamagedHint = "the image is damaged; it cannot be restored";

struct Pack {
  std::string name;                 // series pack number; empty for a plain image
  std::string data_path, index_path;
  FileEntry data, index;            // as the manifest records them
  std::vector<disk::IndexBlock> blocks;
  uint64_t npages = 0;              // unique pages
  std::vector<disk::IndexPage> pages;  // sorted by hash; empty where the index has no hashes
  uint64_t base = 0;                // page ref of its unique page 0
  ScopedFd fd;                      // data_path, read with pread (any thread)
};

// The pages of block `b` of `pk`, whose header `h` and `h.stored_len`
// stored bytes were read from the file: checks the header against the
// index, the checksum and, for a compressed block, that it decompresses to
// exactly its pages. Returns `stored` itself for a block stored raw (no
// copy), else `out` (disk::kBlockRawBytes) holding the decompressed pages.
// Throws Error "FILE: block B (offset O): what" on damage.
const uint8_t* decode_block(const Pack& pk, uint64_t b, const disk::BlockHeader& h,
                            const uint8_t* stored, uint8_t* out);

// Room for a block compressed by lz4 (LZ4_compressBound of a full block),
// rounded to pages.
inline constexpr size_t kPackedBytes =
    (disk::kBlockRawBytes + disk::kBlockRawBytes / 255 + 16 + kPageSize - 1) / kPageSize * kPageSize;

// Whether lz4 finds nothing to take out of the `npages` pages at `raw`,
// judged from 1 KiB at four places (about 1 % of compressing them all):
// then the block is stored raw without trying (on random data lz4 gives up
// early anyway, but not for free).
bool looks_incompressible(const uint8_t* raw, uint32_t npages);

// Block number `block`, the `npages` pages at `raw`, as it is stored: fills
// in its header `h` and returns its stored bytes: with `lz4`, compressed
// into `packed` (kPackedBytes) if that shrinks them, else `raw` itself.
const uint8_t* encode_block(uint64_t block, const uint8_t* raw, uint32_t npages, bool lz4,
                            uint8_t* packed, disk::BlockHeader& h);

}  // namespace snap::image
