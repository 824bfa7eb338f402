// Reading an image directory (FORMAT.md), for restore and `snap info`.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "image/checkpoint.h"
#include "image/image_stats.h"
#include "image/manifest.h"

namespace snap::image {

struct Pack;  // src/image/pack.h

// A block of the page store: pack (index in the image's pack list; 0 for a
// plain image) and block number within that pack.
struct BlockId {
  uint32_t pack = 0;
  uint64_t block = 0;
  auto operator<=>(const BlockId&) const = default;
};

// Consecutive pages of one mapping with one source, as for_each_piece()
// delivers them: all zero, or taken from one block of the page store.
struct PagePiece {
  enum Kind : uint8_t {
    kZero,    // npages zero pages (no block)
    kSeq,     // page i is slot `slot + i` of `block`
    kRepeat,  // every page is slot `slot` of `block`
  };
  uint64_t addr = 0;
  uint32_t npages = 0;
  Kind kind = kZero;
  uint32_t slot = 0;
  BlockId block;
};

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
  // Reads and validates manifest.json and the checkpoint (checksummed), the
  // sizes of all files, the checksums of pages.idx and the pagemap and
  // their consistency with each other and with the Checkpoint. pages.bin is verified block by block as
  // it is read (and as a whole by verify_all()). Throws snap::Error.
  // `path` is a plain image directory, a checkpoint of a series (CKPT/N,
  // whose packs are in CKPT/packs), or a series directory CKPT: then the
  // checkpoint `latest` names, or, where that one fails these checks, the
  // newest older one that passes them (with a warning).
  static ImageReader open(const std::string& path);

  ImageReader(ImageReader&&) noexcept;
  ImageReader& operator=(ImageReader&&) noexcept;
  ~ImageReader();

  const Checkpoint& checkpoint() const;
  ImageStats stats() const;
  const std::string& dir() const;  // the image / checkpoint directory opened
  bool in_series() const;          // a checkpoint of a series (has packs)
  // What a series checkpoint's manifest says of its writing; nullopt for
  // a plain image.
  const std::optional<SeriesFacts>& series_facts() const;

  // For the series writer (src/image only) ------------------------------
  // Where a page is stored: pack (index in the manifest's pack list; 0 for
  // a plain image) and unique page number within that pack.
  struct StoredPage {
    uint32_t pack = 0;
    uint64_t page = 0;
  };
  // The packs' data and index paths and manifest entries, in reference order.
  struct PackFiles {
    std::string name, data_path, index_path;
    uint64_t data_size = 0, index_size = 0, data_xxh3 = 0, index_xxh3 = 0;
    uint64_t npages = 0;
  };
  std::vector<PackFiles> packs() const;
  // Calls fn for every unique page of every pack with its XXH3-128 hash
  // (canonical big-endian bytes).
  void for_each_stored_page(
      const std::function<void(const uint8_t* hash16, const StoredPage&)>& fn) const;
  // The stored page with this XXH3-128 hash (canonical big-endian bytes),
  // if any pack of the image holds one: a binary search of each pack's
  // sorted index, no table to build.
  std::optional<StoredPage> find_stored(const uint8_t* hash16) const;
  // Where pages [addr, addr + npages * kPageSize) of `pid` are, whichever
  // mapping holds them: nullopt for a zero page. Throws when a page was not
  // dumped, unless missing_is_zero (then nullopt too).
  std::vector<std::optional<StoredPage>> locate(pid_t pid, uint64_t addr, size_t npages,
                                                bool missing_is_zero = false) const;

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

  // Where the pages dumped of mapping `mapping_start` of `pid` are stored,
  // in address order, without reading them: a run of the pagemap whose pages
  // lie in several blocks comes as one piece per block. Read the blocks with
  // read_blocks() (image/block_stream.h).
  void for_each_piece(pid_t pid, uint64_t mapping_start,
                      const std::function<void(const PagePiece&)>& fn) const;

  // For src/image only: pack `i` of the image, as for_each_piece's BlockId
  // names it. Its fd may be read from any thread (pread).
  const Pack& pack(uint32_t i) const;

 private:
  class Impl;
  explicit ImageReader(std::unique_ptr<Impl> impl);
  static std::unique_ptr<Impl> open_series(const std::string& ckpt);
  std::unique_ptr<Impl> impl_;
};

}  // namespace snap::image
