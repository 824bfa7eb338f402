#include "image/block_stream.h"


#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "base/log.h"
#include "image/format.h"
#include "image/pack.h"
#include "image/range_reader.h"

namespace snap::image {

namespace {

// One pread: up to this many bytes of consecutive blocks (or one block,
// where that is larger).
constexpr uint64_t kMaxChunkBytes = uint64_t{4} << 20;

// Consecutive blocks of one pack, read with one pread.
struct Chunk {
  uint32_t pack = 0;
  uint64_t first = 0, count = 0;   // block numbers
  uint64_t offset = 0, bytes = 0;  // in the pack's data file
};

std::vector<Chunk> plan_chunks(const ImageReader& img, std::span<const BlockId> blocks,
                               uint64_t max_bytes) {
  std::vector<Chunk> chunks;
  for (const BlockId& id : blocks) {
    const Pack& pk = img.pack(id.pack);
    const uint64_t bytes = pk.block_bytes(id.block);
    if (!chunks.empty()) {
      Chunk& c = chunks.back();
      if (c.pack == id.pack && c.first + c.count == id.block && c.bytes + bytes <= max_bytes) {
        c.count++;
        c.bytes += bytes;
        continue;
      }
    }
    chunks.push_back({id.pack, id.block, 1, pk.blocks.at(id.block).offset, bytes});
  }
  return chunks;
}

// The threads of one read_blocks() call: the chunks, the next one to take,
// the first failure.
class Crew {
 public:
  Crew(const ImageReader& img, std::vector<Chunk> chunks, uint64_t chunk_bytes,
       const std::function<void(const BlockPages&)>& fn)
      : img_(img), chunks_(std::move(chunks)), chunk_bytes_(chunk_bytes), fn_(fn) {
    for (const auto& c : chunks_) {
      if (readers_.size() <= c.pack) readers_.resize(c.pack + 1);
      if (!readers_[c.pack]) {
        const Pack& pk = img.pack(c.pack);
        readers_[c.pack] = std::make_unique<RangeReader>(pk.data_path, pk.fd.get());
      }
    }
  }

  // Takes chunks until none is left or some thread failed.
  void work() noexcept {
    try {
      ReadBuffer stored(chunk_bytes_);
      std::unique_ptr<uint8_t[]> raw;  // for compressed blocks only
      while (!stop_.load(std::memory_order_relaxed)) {
        size_t i = next_.fetch_add(1, std::memory_order_relaxed);
        if (i >= chunks_.size()) return;
        read_chunk(chunks_[i], stored, raw);
      }
    } catch (...) {
      fail(std::current_exception());
    }
  }

  void rethrow_if_failed() {
    std::lock_guard lock(mu_);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void fail(std::exception_ptr e) {
    std::lock_guard lock(mu_);
    if (!error_) error_ = std::move(e);
    stop_.store(true, std::memory_order_relaxed);
  }

  void read_chunk(const Chunk& c, ReadBuffer& buf, std::unique_ptr<uint8_t[]>& raw) {
    const Pack& pk = img_.pack(c.pack);
    const uint8_t* p = readers_[c.pack]->read(c.offset, c.bytes, buf);
    for (uint64_t b = c.first; b < c.first + c.count; ++b) {
      if (stop_.load(std::memory_order_relaxed)) return;
      const uint8_t* at = p;
      p += pk.block_bytes(b);
      if (!(pk.blocks[b].flags & disk::kBlockRaw) && !raw)
        raw = std::make_unique_for_overwrite<uint8_t[]>(disk::kBlockRawBytes);
      const uint8_t* pages = decode_block(pk, b, at, raw.get());
      fn_(BlockPages{{c.pack, b}, pages, pk.blocks[b].npages});
    }
  }

  const ImageReader& img_;
  const std::vector<Chunk> chunks_;
  const uint64_t chunk_bytes_;
  const std::function<void(const BlockPages&)>& fn_;
  std::vector<std::unique_ptr<RangeReader>> readers_;  // by pack
  std::atomic<size_t> next_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::exception_ptr error_;
};

}  // namespace

void read_blocks(const ImageReader& img, std::span<const BlockId> blocks,
                 const BlockReadOptions& opts, const std::function<void(const BlockPages&)>& fn) {
  if (blocks.empty()) return;
  unsigned jobs = std::max(1u, opts.jobs);
  // Each thread holds one chunk of stored blocks and one decompressed block;
  // a chunk holds at least one block, whatever the memory.
  uint64_t biggest = 0;
  for (const BlockId& id : blocks) biggest = std::max(biggest, img.pack(id.pack).block_bytes(id.block));
  uint64_t per_thread = opts.memory / jobs;
  uint64_t chunk_bytes = std::clamp<uint64_t>(per_thread > disk::kBlockRawBytes
                                                  ? per_thread - disk::kBlockRawBytes
                                                  : 0,
                                              biggest, std::max(biggest, kMaxChunkBytes));
  auto chunks = plan_chunks(img, blocks, chunk_bytes);
  uint64_t largest = 0;
  for (const auto& c : chunks) largest = std::max(largest, c.bytes);
  // No more threads than chunks, nor than the memory holds chunks of this
  // size (raw blocks of 4 MiB: many threads would hold 4 MiB each, and
  // reading them is the disk's work, not the CPUs').
  jobs = static_cast<unsigned>(std::min<uint64_t>(
      {jobs, chunks.size(), std::max<uint64_t>(1, opts.memory / (largest + disk::kBlockRawBytes))}));
  Crew crew(img, std::move(chunks), largest, fn);
  std::vector<std::jthread> threads;  // joined on every way out, before crew goes
  threads.reserve(jobs);
  for (unsigned i = 1; i < jobs; ++i) {
    try {
      threads.emplace_back([&crew] { crew.work(); });
    } catch (const std::system_error& e) {
      warn("reading the image with {} thread(s) instead of {}: {}", i, jobs, e.what());
      break;
    }
  }
  crew.work();
  threads.clear();
  crew.rethrow_if_failed();
}

}  // namespace snap::image
