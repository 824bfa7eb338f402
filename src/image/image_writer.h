// Writing an image directory (FORMAT.md). The dumper feeds memory with
// add_pages() while it walks the mappings, then hands the Checkpoint to
// commit(). Nothing is visible at DIR before commit() returns.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/byte_ranges.h"
#include "image/checkpoint.h"
#include "image/image_stats.h"
#include "image/series.h"

namespace snap::image {

// Which blocks of pages.bin are lz4-compressed.
//   kAlways: every block (stored raw only when lz4 does not shrink it).
//   kAuto: compression where it does not slow the dump. Blocks lz4 can do
//     nothing with (judged from a few samples) are stored raw without
//     trying. Blocks lz4 compresses fast (over 1.5 GB/s a thread: mostly
//     repeats) are always compressed. Of the others (text-like data, slow
//     to compress), all are compressed while the disk is what the dump
//     waits for, and only a share (at least an eighth) while the disk keeps
//     up with raw blocks and the CPUs are the limit: compressing them all
//     would then make the dump slower, not the image smaller for free.
//     With many CPUs for a disk, that is all of them.
enum class Compression { kAuto, kAlways };

class ImageWriter {
 public:
  // Starts an image for DIR in a fresh sibling directory DIR.snap-tmp-XXXXXX
  // (mode 0700). An existing DIR must be an empty directory, or, with
  // `force`, a snap image, which commit() replaces atomically. Anything else
  // at DIR is refused (checked again by commit()).
  static ImageWriter create(const std::string& dir, bool force);

  // Starts the next checkpoint of the series in `ckpt_dir` (FORMAT.md,
  // "Checkpoint series"), creating the directory if needed. Takes the
  // series' lock (another writer there is refused), removes what a killed
  // writer or collection left (temporary directories, packs no checkpoint
  // refers to), opens the latest good checkpoint as the base for
  // add_unchanged() and for deduplication, and numbers the new checkpoint
  // one above the highest there. Its pages go to a new pack, packs/N.pack;
  // pages stored in a pack of the base are referred to, not stored again.
  static ImageWriter create_in_series(const std::string& ckpt_dir, SeriesOptions opts = {});

  ImageWriter(ImageWriter&&) noexcept;
  ImageWriter& operator=(ImageWriter&&) noexcept;
  // Without a successful commit(): stops the workers and removes the
  // temporary directory. DIR, and any image already there, is left alone.
  ~ImageWriter();

  // How many threads compress pages (and so how much memory the writer
  // holds: about 1.5 MiB per thread); 0, or not called: the CPUs snap may
  // use. Only before the first add_pages().
  void set_jobs(unsigned n);
  // Before the first add_pages(); default kAlways (snap dump asks for kAuto).
  void set_compression(Compression c);

  // Records npages pages of process `pid`, mapping starting at
  // `mapping_start`, beginning at page-aligned `addr`; `data` holds
  // npages * kPageSize bytes and is copied before the call returns. Zero
  // pages are recorded without data; a page equal to one already stored
  // (anywhere in the image) is stored once. Pages of one mapping may come in
  // several calls, in any order, but must not overlap.
  // Thread-safe, and made to be called from several threads at once: pages
  // are hashed and copied outside the writer's lock. Blocks while the
  // compression queue is full. Throws the error of a failed background
  // write (SysError naming pages.bin).
  void add_pages(pid_t pid, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                 size_t npages);

  // Series only: the npages pages of `pid` at `addr` are the same as in the
  // previous checkpoint (the base); they refer to whatever it stored for
  // them, looked up by pid and address (whatever mapping held them then),
  // and are recorded under mapping `mapping_start` of the new checkpoint.
  // Throws when there is no base or the base has no such pages for pid,
  // unless `missing_is_zero` (write tracking knows such a page was never
  // written: it is zero). Thread-safe.
  void add_unchanged(pid_t pid, uint64_t mapping_start, uint64_t addr, size_t npages,
                     bool missing_is_zero = false);
  // Series only: the npages pages of `pid` at `addr` are those the base
  // stored for pid at `base_addr` (a file's contents the base keeps under
  // another id); pages the base has none for are zero. Thread-safe.
  void add_earlier(pid_t pid, uint64_t mapping_start, uint64_t addr, uint64_t base_addr,
                   size_t npages);

  // Forgets the pages given for mapping `mapping_start` of `pid` (a file
  // whose contents changed while they were read): they stay in pages.bin,
  // referred to by nothing. Thread-safe.
  void forget(pid_t pid, uint64_t mapping_start);
  // Forgets the pages given for mapping `mapping_start` of `pid` at
  // `addrs` (ascending, disjoint [first, end); pages never given are
  // skipped), so that they can be given again: a data file's pages read
  // while the job ran and written by it before the stop. What they stored
  // stays in pages.bin, referred to by nothing. Thread-safe.
  void forget_pages(pid_t pid, uint64_t mapping_start, const std::vector<ByteRange>& addrs);
  // A plain image: room for `npages` more pages given later to take the places
  // in pages.bin of pages forgotten (image/freed_places.h), made now,
  // before a stretch where a page fault of snap's would cost (the job
  // stopped). Without it pages forgotten stay in pages.bin, referred to by
  // nothing. Thread-safe.
  void reserve_places(size_t npages);
  // Moves the pages given for mapping `from` of `pid` at `addrs`
  // (ascending, disjoint [first, end)) to mapping `to`: the mapping they
  // were read in was split since, and they are in the part starting at
  // `to` now (memory read before the stop). Thread-safe.
  void move_pages(pid_t pid, uint64_t from, uint64_t to, const std::vector<ByteRange>& addrs);

  // Waits for compression, writes pages.idx, pagemap.bin.lz4,
  // checkpoint.json.lz4 (with each Mapping's pages_dumped filled in from
  // what add_pages saw) and manifest.json,
  // fsyncs them and the directory, then moves the image into place at DIR.
  // Every (pid, mapping_start) given to add_pages must name a mapping of
  // `c` that contains its pages (or a file of c.temp_files stored in the
  // page store: image::kFilePagesPid). Call once; on failure the writer is spent
  // and its destructor cleans up.
  //
  // In a series, commit() writes packs/N.idx, then the checkpoint into
  // CKPT/N.tmp-XXXXXX, renames it to CKPT/N, switches `latest` to it (each
  // step fsynced), sets `c.series_number` in what it writes, and then
  // removes the checkpoints older than the `keep` newest and the packs only
  // they used. A failure of that collection is a warning: the checkpoint
  // is committed by then.
  void commit(const Checkpoint& c);

  ImageStats stats() const;
  const std::string& dir() const;       // DIR (in a series: CKPT/N)
  uint64_t series_number() const;       // N in a series, else 0
  // The checkpoint add_unchanged() refers to: the one `latest` named at
  // create_in_series() (or, where it was damaged, the newest good one
  // before it); nullopt for the first checkpoint of a series or a plain
  // image. A dumper whose dirty-page tracking started at another
  // checkpoint must give all pages with add_pages().
  std::optional<uint64_t> base_number() const;
  // That checkpoint's manifest (nullptr where there is none).
  const Checkpoint* base_checkpoint() const;
  const std::string& temp_dir() const;  // where the image is written until commit

 private:
  class Impl;
  explicit ImageWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace snap::image
