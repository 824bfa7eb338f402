// One page store of an image (FORMAT.md): pages.bin + pages.idx of a plain
// image, or one pack of a series (packs/N.pack + packs/N.idx), and the
// checks every block read from it passes. Internal to src/image.
#pragma once

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

}  // namespace snap::image
