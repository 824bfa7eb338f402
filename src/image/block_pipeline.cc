#include "image/block_pipeline.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include "base/cpus.h"
#include "image/format.h"
#include "image/staged_file.h"

namespace snap::image {

// One reusable block buffer. Allocated on first use and then recycled, so
// a dump touches fresh memory only for the first few blocks. Its pages are
// copied in by the threads that add them, outside the lock: a slot is
// compressed once it is closed (full, or the last one at finish) and no
// copy into it is still under way.
struct BlockPipeline::Slot {
  uint8_t* raw = nullptr;     // kBlockRawBytes
  uint8_t* packed = nullptr;  // kPackedBytes
  uint64_t block = 0;
  uint32_t npages = 0;   // places handed out
  uint32_t copying = 0;  // of those, copies not done yet
  bool closed = false;
  bool lz4 = true;  // compress it (Compression::kAuto decides per block)
  Pack::Block entry;                // after compress(), but its offset
  const uint8_t* stored = nullptr;  // raw or packed, after compress()
};

BlockPipeline::BlockPipeline(std::mutex& mu, int fd, std::string path)
    : mu_(mu), out_(std::make_unique<BlockAppender>(fd, std::move(path))) {}

BlockPipeline::~BlockPipeline() = default;

void BlockPipeline::set_jobs(unsigned n) {
  if (slots_.empty()) jobs_ = std::clamp(n, 1u, kMaxWorkers);
}

void BlockPipeline::rethrow_if_failed() const {
  if (error_) std::rethrow_exception(error_);
}

// The block buffers, at the first page.
void BlockPipeline::make_slots() {
  if (!slots_.empty()) return;
  const unsigned n = jobs_ ? jobs_ : std::min(usable_cpus(), kMaxWorkers);
  // One slot being filled, others closed and waiting for their last
  // copies, one per thread being compressed, and as many done and
  // waiting for their turn to be written: this bounds memory.
  const size_t nslots = 3 * size_t{n} + 4;
  // Their buffers are slices of one huge-page buffer (base/huge_buffer.h),
  // each touched when first used.
  arena_ = HugeBuffer(nslots * (disk::kBlockRawBytes + kPackedBytes));
  slots_.resize(nslots);
  for (size_t i = 0; i < nslots; ++i) {
    slots_[i].raw = arena_.data() + i * disk::kBlockRawBytes;
    slots_[i].packed = arena_.data() + nslots * disk::kBlockRawBytes + i * kPackedBytes;
  }
  for (size_t i = nslots; i-- > 0;) free_.push_back(static_cast<int>(i));
}

bool BlockPipeline::has_room() {
  make_slots();
  return filling_ >= 0 || !free_.empty();
}

void BlockPipeline::wait_for_room(std::unique_lock<std::mutex>& lock) {
  free_cv_.wait(lock, [&] { return error_ || filling_ >= 0 || !free_.empty(); });
  rethrow_if_failed();
}

// A free slot becomes the one filling, for the next block.
void BlockPipeline::start_slot() {
  filling_ = free_.back();
  free_.pop_back();
  Slot& s = slots_[static_cast<size_t>(filling_)];
  s.block = next_block_++;
  s.npages = 0;
  s.copying = 0;
  s.closed = false;
}

uint64_t BlockPipeline::place(const uint8_t* page, Owed& owed) {
  if (filling_ < 0) start_slot();
  const int si = filling_;
  Slot& s = slots_[static_cast<size_t>(si)];
  // Slots are numbered in kBlockPages steps (the blocks on disk may join
  // several: BlockAppender).
  const uint64_t u = s.block * disk::kBlockPages + s.npages;
  auto& copies = owed.copies;
  if (!copies.empty() && copies.back().slot == si &&
      copies.back().place + copies.back().npages == s.npages &&
      copies.back().src + copies.back().npages * kPageSize == page)
    copies.back().npages++;
  else
    copies.push_back({si, s.npages, page, 1});
  s.copying++;
  if (++s.npages == disk::kBlockPages) {
    s.closed = true;
    filling_ = -1;
  }
  return u;
}

void BlockPipeline::settle(std::unique_lock<std::mutex>& lock, Owed& owed) {
  finish_copies(lock, owed);
  compress_and_write(lock, owed.complete);
}

// Copies pages into the places taken for them, outside the lock; adds the
// slots whose last copy that was to `owed.complete`.
void BlockPipeline::finish_copies(std::unique_lock<std::mutex>& lock, Owed& owed) {
  if (owed.copies.empty()) return;
  lock.unlock();
  for (const Copy& c : owed.copies)
    std::memcpy(slots_[static_cast<size_t>(c.slot)].raw + size_t{c.place} * kPageSize, c.src,
                size_t{c.npages} * kPageSize);
  lock.lock();
  for (const Copy& c : owed.copies) {
    Slot& s = slots_[static_cast<size_t>(c.slot)];
    s.copying -= c.npages;
    if (s.copying == 0 && s.closed) owed.complete.push_back(c.slot);
  }
  owed.copies.clear();
}

// Compresses the complete slots outside the lock, on the calling thread
// (the one that just copied their pages: no hand-off to another thread,
// which costs a context switch per block), then appends what is next in
// block order. Called and returns with the lock held.
void BlockPipeline::compress_and_write(std::unique_lock<std::mutex>& lock,
                                       std::vector<int>& complete) {
  if (complete.empty()) return;
  if (compression_ == Compression::kAuto) {
    // Blocks lz4 can do nothing with are stored raw; of the others, the
    // share the disk leaves time for is compressed (see Compression).
    lock.unlock();
    for (int s : complete) {
      Slot& slot = slots_[static_cast<size_t>(s)];
      slot.lz4 = !looks_incompressible(slot.raw, slot.npages);
    }
    lock.lock();
    for (int s : complete) {
      Slot& slot = slots_[static_cast<size_t>(s)];
      if (slot.lz4) ++compressible_since_adjust_;
      // Cheap compression (lz4 fast on this data: mostly repeats) is
      // always worth it: it costs less than writing the bytes.
      if (!slot.lz4 || lz4_rate_ >= kCheapLz4) continue;
      credit_ += share_;
      slot.lz4 = credit_ >= 1;
      if (slot.lz4) credit_ -= 1;
      else ++skipped_;
    }
  }
  lock.unlock();
  try {
    double lz4_seconds = 0;
    uint64_t lz4_bytes = 0;
    for (int s : complete) {
      Slot& slot = slots_[static_cast<size_t>(s)];
      auto t0 = std::chrono::steady_clock::now();
      slot.stored = encode_block(slot.raw, slot.npages, slot.lz4, slot.packed, slot.entry);
      if (slot.lz4 && !(slot.entry.flags & disk::kBlockRaw)) {
        lz4_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        lz4_bytes += uint64_t{slot.npages} * kPageSize;
      }
    }
    lock.lock();
    if (lz4_bytes && lz4_seconds > 0) {  // bytes per second of one thread, recent blocks weigh most
      double rate = static_cast<double>(lz4_bytes) / lz4_seconds;
      lz4_rate_ = lz4_rate_ == kUnknownRate ? rate : 0.75 * lz4_rate_ + 0.25 * rate;
    }
    for (int s : complete) done_.emplace(slots_[static_cast<size_t>(s)].block, s);
    complete.clear();
    lock.unlock();
    write_ready_blocks();
  } catch (...) {
    if (!lock.owns_lock()) lock.lock();
    if (!error_) error_ = std::current_exception();
    free_cv_.notify_all();
    done_cv_.notify_all();
    throw;
  }
  lock.lock();
}

// Appends compressed blocks in block order, so that the file is laid out
// (and checksummed) sequentially whatever order the threads finish them
// in. One thread at a time does it, for as long as the next block is
// ready; the others only leave theirs in done_. Called without the lock.
void BlockPipeline::write_ready_blocks() {
  {
    std::lock_guard lock(mu_);
    if (appending_) return;
    appending_ = true;
  }
  // (After a failure appending_ stays set: nothing is written any more.)
  for (;;) {
    int s;
    {
      std::lock_guard lock(mu_);
      auto it = done_.find(next_write_);
      if (error_ || it == done_.end()) {
        appending_ = false;  // under the same lock that found nothing
        return;
      }
      s = it->second;
      done_.erase(it);
    }
    Slot& slot = slots_[static_cast<size_t>(s)];
    out_->append(slot.entry, slot.stored);

    // Every 8 MiB of blocks: is the disk keeping up?
    StagedFile::Pressure pressure;
    const bool adjust = compression_ == Compression::kAuto && ++since_adjust_ >= kAdjustBlocks;
    if (adjust) pressure = out_->pressure();

    std::lock_guard lock(mu_);
    if (adjust) {
      since_adjust_ = 0;
      bool behind = pressure.waited > 0.001 || pressure.unsynced > 2 * StagedFile::kSyncEvery;
      // Few compressible blocks among the last ones (a job of mostly
      // incompressible data, its libraries' and stacks' pages here and
      // there): compressing them all costs the CPUs little, and stored raw
      // they would make the image larger than it need be.
      bool sparse = compressible_since_adjust_ < kAdjustBlocks / 4;
      compressible_since_adjust_ = 0;
      share_ = behind || sparse ? std::min(1.0, share_ + kShareStep)
                                : std::max(kMinShare, share_ - kShareStep);
    }
    stored_bytes_ = out_->size();
    raw_written_.push_back(slot.entry.flags & disk::kBlockRaw);  // block next_write_
    ++next_write_;
    free_.push_back(s);
    free_cv_.notify_all();
    done_cv_.notify_all();
  }
}

io::FileSum BlockPipeline::finish(std::unique_lock<std::mutex>& lock) {
  rethrow_if_failed();
  std::vector<int> last;
  if (filling_ >= 0) {  // the last block, not full
    Slot& s = slots_[static_cast<size_t>(filling_)];
    s.closed = true;
    if (s.copying == 0) last.push_back(filling_);
    filling_ = -1;
  }
  compress_and_write(lock, last);
  done_cv_.wait(lock, [&] { return error_ || next_write_ == next_block_; });
  rethrow_if_failed();
  lock.unlock();
  io::FileSum sum = out_->finish();
  lock.lock();
  blocks_ = out_->blocks();
  stored_bytes_ = sum.size;
  return sum;
}

}  // namespace snap::image
