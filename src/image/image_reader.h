// Reading an image directory (FORMAT.md), for restore and `snap info`.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "image/checkpoint.h"
#include "image/image_stats.h"

namespace snap::image {

// Consecutive pages of one mapping, as for_each_run() delivers them.
struct PageRun {
  uint64_t addr = 0;
  size_t npages = 0;
  // npages * kPageSize bytes, valid during the callback only; nullptr when
  // the pages are all zero (fresh anonymous memory needs no write for them).
  const uint8_t* data = nullptr;
  bool zero() const { return data == nullptr; }
};

class ImageReader {
 public:
  // Reads and validates manifest.json, the sizes of all files, the
  // checksums of pages.idx and pagemap.bin and their consistency with each
  // other and with the Checkpoint. pages.bin is verified block by block as
  // it is read (and as a whole by verify_all()). Throws snap::Error.
  static ImageReader open(const std::string& dir);

  ImageReader(ImageReader&&) noexcept;
  ImageReader& operator=(ImageReader&&) noexcept;
  ~ImageReader();

  const Checkpoint& checkpoint() const;
  ImageStats stats() const;
  const std::string& dir() const;

  // Reads everything: every block (checksum, decompression), every stored
  // page against its hash in pages.idx, and the checksum of pages.bin.
  // Throws an Error naming the damaged file and block.
  void verify_all();

  // Calls fn for the pages dumped of mapping `mapping_start` of `pid`, in
  // address order: runs of zero pages, and runs of up to kMaxRunPages
  // consecutive non-zero pages. Pages with no run were not dumped. Nothing
  // is called for a mapping without pages. Decompressed blocks are cached
  // and the buffers reused; use one reader from one thread at a time.
  static constexpr size_t kMaxRunPages = 256;  // 1 MiB
  void for_each_run(pid_t pid, uint64_t mapping_start,
                    const std::function<void(const PageRun&)>& fn);

 private:
  class Impl;
  explicit ImageReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace snap::image
