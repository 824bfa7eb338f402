// The pages a writer stores, on their way from the threads that add them to
// pages.bin (or a series pack): 64-page blocks filled in place by those
// threads, compressed by the thread that completes one (kAuto: as much as
// the disk leaves time for), appended in block order (BlockAppender).
// Memory is bounded: a fixed set of block buffers, recycled once written.
// Internal to src/image (ImageWriter).
//
// Locking: the pipeline shares the writer's mutex (`mu`), which also guards
// the writer's page table and pagemap, so that a page is looked up, given a
// place and recorded under one lock. Every member function is called with
// that mutex held through the `lock` it is given (or a lock_guard, where it
// takes none); some release it while they copy, compress or write.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/huge_buffer.h"
#include "image/block_appender.h"
#include "image/file_io.h"
#include "image/format.h"
#include "image/image_writer.h"
#include "image/pack.h"

namespace snap::image {

class BlockPipeline {
 public:
  // Threads adding pages at once (block buffers are made for them), at most.
  static constexpr unsigned kMaxWorkers = 64;

  // A page copy a thread owes to a block buffer (consecutive places merged).
  struct Copy {
    int slot;
    uint32_t place;  // first page's place in the block
    const uint8_t* src;
    uint32_t npages;
  };
  // What one add_pages() call owes: the copies it took places for, and the
  // blocks whose last copy it made. Per thread (thread_local in the writer).
  struct Owed {
    std::vector<Copy> copies;
    std::vector<int> complete;
  };

  // `fd`, open for writing at offset 0 of an empty file, stays the
  // caller's and must outlive the pipeline; `path` names it in errors.
  BlockPipeline(std::mutex& mu, int fd, std::string path);
  ~BlockPipeline();  // waits for writes in flight

  // Before the first page: how many threads will add pages at once (and so
  // how many block buffers there are). Later calls change nothing.
  void set_jobs(unsigned n);
  void set_compression(Compression c) { compression_ = c; }

  // Throws the first failure to compress or write, if any.
  void rethrow_if_failed() const;

  // Whether a page can take a place now (else: settle what `owed` holds,
  // then wait_for_room()).
  bool has_room();
  // Waits until a page can take a place (or something failed: throws it).
  void wait_for_room(std::unique_lock<std::mutex>& lock);
  // A place for `page` (copied there by settle()); returns its unique page
  // number. Only after has_room().
  uint64_t place(const uint8_t* page, Owed& owed);
  // Copies what `owed` owes outside the lock, then compresses the blocks
  // that completes and appends what is next in block order.
  void settle(std::unique_lock<std::mutex>& lock, Owed& owed);

  // Closes the last block, waits until every block is written, ends the
  // file (no fsync): its size and checksum. Throws the first failure.
  io::FileSum finish(std::unique_lock<std::mutex>& lock);
  // Once finished: the blocks as written.
  const std::vector<Pack::Block>& blocks() const { return blocks_; }
  bool direct() const { return out_->direct(); }
  // Whether unique page `u` is in pages.bin already, in a block stored raw
  // (so that its place can be written over: FreedPlaces).
  bool written_raw(uint64_t u) const {
    const uint64_t b = u / disk::kBlockPages;
    return b < raw_written_.size() && raw_written_[b];
  }
  uint64_t stored_bytes() const { return stored_bytes_; }
  // Compressible 64-page blocks left raw because the disk kept up (kAuto).
  uint64_t skipped() const { return skipped_; }

 private:
  struct Slot;
  void make_slots();
  void start_slot();
  void finish_copies(std::unique_lock<std::mutex>& lock, Owed& owed);
  void compress_and_write(std::unique_lock<std::mutex>& lock, std::vector<int>& complete);
  void write_ready_blocks();

  std::mutex& mu_;
  std::unique_ptr<BlockAppender> out_;
  std::condition_variable free_cv_, done_cv_;
  HugeBuffer arena_;              // the slots' buffers
  std::vector<Slot> slots_;       // made at the first page, never resized
  std::vector<int> free_;         // slots ready for filling
  int filling_ = -1;              // slot taking new pages, or none
  std::map<uint64_t, int> done_;  // block -> compressed slot awaiting its write
  uint64_t next_block_ = 0;       // number of the next block to fill
  uint64_t next_write_ = 0;       // number of the next block to write
  std::exception_ptr error_;      // first failure to compress or write
  bool appending_ = false;        // a thread is in write_ready_blocks()
  unsigned jobs_ = 0;             // threads adding pages at once; 0: the CPUs snap may use
  uint64_t stored_bytes_ = 0;
  Compression compression_ = Compression::kAlways;
  // kAuto: the share of compressible blocks compressed, adjusted every
  // kAdjustBlocks blocks written: up when the disk falls behind (compressing
  // costs nothing then) or when fewer than a quarter of the blocks since
  // were compressible (compressing them costs little), down to kMinShare
  // while the disk keeps up with mostly compressible blocks (the CPUs are
  // what the dump waits for); credit_ spreads it over the blocks.
  static constexpr double kMinShare = 0.125, kShareStep = 0.25;
  // Compressible blocks compressed faster than this (per thread, bytes/s)
  // are all compressed, whatever the disk: that costs less than the write.
  static constexpr double kCheapLz4 = 1.5e9, kUnknownRate = 1e30;
  double lz4_rate_ = kUnknownRate;
  static constexpr unsigned kAdjustBlocks = 32;
  double share_ = 1.0, credit_ = 0;
  uint64_t skipped_ = 0;       // compressible blocks stored raw
  unsigned since_adjust_ = 0;  // the appending thread's
  unsigned compressible_since_adjust_ = 0;  // blocks lz4 may shrink, since the last adjustment
  std::vector<Pack::Block> blocks_;  // once finished
  std::vector<bool> raw_written_;    // per block written (kBlockPages each): stored raw
};

}  // namespace snap::image
