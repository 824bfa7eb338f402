// Writing an image directory (FORMAT.md). The dumper feeds memory with
// add_pages() while it walks the mappings, then hands the Checkpoint to
// commit(). Nothing is visible at DIR before commit() returns.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "image/checkpoint.h"
#include "image/image_stats.h"

namespace snap::image {

class ImageWriter {
 public:
  // Starts an image for DIR in a fresh sibling directory DIR.snap-tmp-XXXXXX
  // (mode 0700). An existing DIR must be an empty directory, or, with
  // `force`, a snap image, which commit() replaces atomically. Anything else
  // at DIR is refused (checked again by commit()).
  static ImageWriter create(const std::string& dir, bool force);

  ImageWriter(ImageWriter&&) noexcept;
  ImageWriter& operator=(ImageWriter&&) noexcept;
  // Without a successful commit(): stops the workers and removes the
  // temporary directory. DIR, and any image already there, is left alone.
  ~ImageWriter();

  // Records npages pages of process `pid`, mapping starting at
  // `mapping_start`, beginning at page-aligned `addr`; `data` holds
  // npages * kPageSize bytes and is copied before the call returns. Zero
  // pages are recorded without data; a page equal to one already stored
  // (anywhere in the image) is stored once. Pages of one mapping may come in
  // several calls, in any order, but must not overlap.
  // Thread-safe. Blocks while the compression queue is full. Throws the
  // error of a failed background write (SysError naming pages.bin).
  void add_pages(pid_t pid, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                 size_t npages);

  // Waits for compression, writes pages.idx, pagemap.bin and manifest.json
  // (with each Mapping's pages_dumped filled in from what add_pages saw),
  // fsyncs them and the directory, then moves the image into place at DIR.
  // Every (pid, mapping_start) given to add_pages must name a mapping of
  // `c` that contains its pages. Call once; on failure the writer is spent
  // and its destructor cleans up.
  void commit(const Checkpoint& c);

  ImageStats stats() const;
  const std::string& dir() const;       // DIR
  const std::string& temp_dir() const;  // where the image is written until commit

 private:
  class Impl;
  explicit ImageWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace snap::image
