// Reading many blocks of an image's page store at the disk's speed: worker
// threads each read a run of consecutive blocks with one read (O_DIRECT
// when they are not in the page cache: range_reader.h), check and
// decompress them one by one, and hand each block's pages to the caller's
// function on the same thread, while the others read on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

#include "image/image_reader.h"

namespace snap::image {

// One block's pages, as read_blocks() hands them over.
struct BlockPages {
  BlockId id;
  const uint8_t* pages = nullptr;  // npages * kPageSize bytes, valid during the call only
  uint32_t npages = 0;
};

struct BlockReadOptions {
  // Threads, the caller's included; at least 1, and no more than `memory`
  // holds a read and a decompressed block for (a read holds one block at
  // least: up to 4 MiB for a raw one).
  unsigned jobs = 1;
  size_t memory = size_t{64} << 20;  // all their buffers together, at most (about)
};

// Reads every block of `blocks` (sorted, no duplicates, as the image names
// them: see ImageReader::for_each_piece) exactly once, checking each like
// any read of the image (header against the index, checksum, decompressed
// length), and calls fn for it. fn runs on up to opts.jobs threads at once
// (the calling thread is one of them), for blocks taken in file order; it
// must be safe to call concurrently. A block stored raw is handed over from
// the read buffer, without a copy. The first failure (an Error naming the
// file and block of a damaged block, or whatever fn throws) stops every
// thread; it is rethrown once all have ended. No thread outlives the call.
void read_blocks(const ImageReader& img, std::span<const BlockId> blocks,
                 const BlockReadOptions& opts, const std::function<void(const BlockPages&)>& fn);

}  // namespace snap::image
