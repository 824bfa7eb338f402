// pages.bin (or a series pack) as the writer appends its blocks (FORMAT.md,
// version 7): their stored bytes back to back, no header between them; the
// block table for pages.idx; the file's checksum for the manifest.
// Consecutive blocks stored raw become one block of up to kRawBlockPages
// pages, so that incompressible memory costs one index entry and one
// checksum per 4 MiB rather than per 256 KiB; a raw block's checksum is
// its pages' summed (kBlockPageSums). Internal to src/image.
#pragma once

#include <xxhash.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "image/file_io.h"
#include "image/pack.h"
#include "image/staged_file.h"

namespace snap::image {

class BlockAppender {
 public:
  // `fd`: open for writing at offset 0 of an empty file, owned by the
  // caller (it must outlive this object); `path` names it in errors.
  BlockAppender(int fd, std::string path);

  // Appends one block as encode_block() made it (`e` but its offset; its
  // `e.npages` pages at `stored`). One thread at a time. Throws the error
  // of a failed write (SysError naming the file).
  void append(const Pack::Block& e, const uint8_t* stored);

  // Ends the last block, writes what is left and waits for every write
  // (no fsync). Returns the file's size and XXH3-64.
  io::FileSum finish();

  // The blocks appended, once finish() returned.
  const std::vector<Pack::Block>& blocks() const { return blocks_; }
  uint64_t size() const { return stage_.size(); }
  bool direct() const { return stage_.direct(); }
  StagedFile::Pressure pressure() { return stage_.pressure(); }

 private:
  StagedFile stage_;
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> file_sum_;
  std::vector<Pack::Block> blocks_;
  bool raw_open_ = false;  // blocks_.back() is raw and takes more pages
};

}  // namespace snap::image
