// Reading the page store block by block on several threads
// (src/image/block_stream.h) and the pieces that say where each page goes
// (ImageReader::for_each_piece).
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

#include "tests/unit/temp_dir.h"
#include "tests/unit/test_pages.h"

#include "base/error.h"
#include "image/block_stream.h"
#include "image/checkpoint.h"
#include "image/image_reader.h"
#include "image/image_writer.h"
#include "image/pack.h"

namespace snap::image {
namespace {

using test_support::TempDir;
using Page = std::vector<uint8_t>;

constexpr pid_t kPid = 100;
constexpr uint64_t kStart = 0x7f0000000000;
constexpr uint64_t kPages = 700;

using test_support::random_page;
using test_support::text_page;

// A checkpoint of one process with one mapping of `npages` at kStart.
Checkpoint one_mapping(uint64_t npages) {
  Checkpoint c;
  Process proc;
  proc.pid = kPid;
  proc.ppid = 1;
  proc.pgid = proc.sid = kPid;
  ThreadState t;
  t.tid = kPid;
  proc.threads.push_back(t);
  Mapping m;
  m.start = kStart;
  m.end = kStart + npages * kPageSize;
  m.prot = 3;
  proc.mappings.push_back(m);
  c.processes.push_back(proc);
  return c;
}

// A plain image of one mapping: random pages (raw blocks), text pages
// (compressed blocks), zero pages, a page repeated, and random again.
// Returns the pages by address (zero pages as empty).
std::map<uint64_t, Page> write_image(const std::string& dir) {
  std::mt19937_64 rng(7);
  std::map<uint64_t, Page> want;
  for (uint64_t i = 0; i < kPages; ++i) {
    Page p;
    if (i < 200 || i >= 500) p = random_page(rng);
    else if (i < 400) p = text_page(i);
    else if (i >= 450) p = text_page(1000);  // the same page 50 times
    want[kStart + i * kPageSize] = p;
  }
  auto w = ImageWriter::create(dir, false);
  for (const auto& [addr, p] : want) {
    Page data = p.empty() ? Page(kPageSize, 0) : p;
    w.add_pages(kPid, kStart, addr, data.data(), 1);
  }
  w.commit(one_mapping(kPages));
  return want;
}

std::vector<PagePiece> pieces_of(const ImageReader& r) {
  std::vector<PagePiece> v;
  r.for_each_piece(kPid, kStart, [&](const PagePiece& p) { v.push_back(p); });
  return v;
}

std::vector<BlockId> blocks_of(const std::vector<PagePiece>& pieces) {
  std::set<BlockId> s;
  for (const auto& p : pieces)
    if (p.kind != PagePiece::kZero) s.insert(p.block);
  return {s.begin(), s.end()};
}

// The mapping's pages as the pieces and read_blocks give them.
std::map<uint64_t, Page> read_back(const ImageReader& r, const BlockReadOptions& opts,
                                   std::map<BlockId, int>* delivered = nullptr) {
  auto pieces = pieces_of(r);
  std::map<uint64_t, Page> got;
  std::mutex mu;
  for (const auto& p : pieces)
    if (p.kind == PagePiece::kZero)
      for (uint32_t i = 0; i < p.npages; ++i) got[p.addr + i * kPageSize] = Page{};
  read_blocks(r, blocks_of(pieces), opts, [&](const BlockPages& b) {
    std::lock_guard lock(mu);
    if (delivered) (*delivered)[b.id]++;
    for (const auto& p : pieces) {
      if (p.kind == PagePiece::kZero || p.block != b.id) continue;
      for (uint32_t i = 0; i < p.npages; ++i) {
        uint32_t slot = p.kind == PagePiece::kSeq ? p.slot + i : p.slot;
        EXPECT_LT(slot, b.npages);
        const uint8_t* src = b.pages + slot * kPageSize;
        got[p.addr + i * kPageSize] = Page(src, src + kPageSize);
      }
    }
  });
  return got;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ForEachPiece, CoversTheMappingInAddressOrderOneBlockAPiece) {
  TempDir t;
  write_image(t / "img");
  auto r = ImageReader::open(t / "img");
  auto pieces = pieces_of(r);
  uint64_t next = kStart;
  bool repeat = false;
  for (const auto& p : pieces) {
    EXPECT_EQ(p.addr, next);
    next = p.addr + p.npages * kPageSize;
    if (p.kind == PagePiece::kSeq) {
      EXPECT_LE(p.slot + p.npages, r.pack(p.block.pack).blocks.at(p.block.block).npages);
    }
    repeat |= p.kind == PagePiece::kRepeat;
  }
  EXPECT_EQ(next, kStart + kPages * kPageSize);
  EXPECT_TRUE(repeat);
}

TEST(ReadBlocks, EveryBlockOnceAndEveryPageRightOnAnyNumberOfThreads) {
  TempDir t;
  auto want = write_image(t / "img");
  auto r = ImageReader::open(t / "img");
  auto stats = r.stats();
  ASSERT_GT(stats.raw_blocks, 0u);
  ASSERT_LT(stats.raw_blocks, stats.blocks);
  for (unsigned jobs : {1u, 2u, 4u, 16u}) {
    // 1: one block a read, one thread; 4 MiB: small reads, up to 4 threads.
    for (size_t memory : {size_t{1}, size_t{4} << 20, size_t{64} << 20}) {
      std::map<BlockId, int> delivered;
      auto got = read_back(r, {jobs, memory}, &delivered);
      EXPECT_EQ(got, want) << jobs << " thread(s), memory " << memory;
      EXPECT_EQ(delivered.size(), blocks_of(pieces_of(r)).size());
      for (const auto& [id, n] : delivered) EXPECT_EQ(n, 1) << "block " << id.block;
    }
  }
}

using test_support::flip_byte_in_block;

// Drops a file from the page cache (snap fsyncs its images, so nothing is dirty).
void drop_cached(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// Pages of `path` in the page cache, or -1 where cachestat() is missing.
long cached_pages(const std::string& path) {
  struct {
    uint64_t off, len;
  } range{0, 0};  // len 0: to the end
  uint64_t cs[5] = {};
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  long rc = ::syscall(451 /* cachestat */, fd, &range, cs, 0);
  ::close(fd);
  return rc < 0 ? -1 : static_cast<long>(cs[0]);
}

TEST(ReadBlocks, AColdImageIsReadRightAndLeavesThePageCacheAlone) {
  TempDir t;
  auto want = write_image(t / "img");
  const std::string pages = t / "img/pages.bin";
  drop_cached(pages);
  // Where the drop worked (not tmpfs) and cachestat() exists, the reads
  // must not have gone through the page cache (O_DIRECT), if the file
  // system takes O_DIRECT at all.
  bool observable = cached_pages(pages) == 0;
  int direct = ::open(pages.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (direct < 0) observable = false;
  else ::close(direct);
  auto r = ImageReader::open(t / "img");
  EXPECT_EQ(read_back(r, {2, size_t{64} << 20}), want);
  if (observable) {
    EXPECT_EQ(cached_pages(pages), 0);
  }
  drop_cached(pages);
  EXPECT_EQ(read_back(r, {3, size_t{1}}), want);  // one block a read: unaligned ends
  if (observable) {
    EXPECT_EQ(cached_pages(pages), 0);
  }
  // A damaged block read cold is named too.
  flip_byte_in_block(pages, 3);
  drop_cached(pages);
  auto damaged = ImageReader::open(t / "img");
  std::string msg = error_of([&] { read_back(damaged, {2, size_t{64} << 20}); });
  EXPECT_NE(msg.find("pages.bin: block 3 "), std::string::npos) << msg;
}

TEST(ReadBlocks, AFileCutShortAfterOpeningIsTruncatedCold) {
  TempDir t;
  write_image(t / "img");
  auto r = ImageReader::open(t / "img");
  const std::string pages = t / "img/pages.bin";
  ASSERT_EQ(::truncate(pages.c_str(), 300 * 1024 + 17), 0);  // within block 0, unaligned
  drop_cached(pages);
  std::string msg = error_of([&] { read_back(r, {2, size_t{64} << 20}); });
  EXPECT_NE(msg.find("pages.bin: truncated"), std::string::npos) << msg;
}

TEST(ReadBlocks, ADamagedBlockIsNamedWhateverTheThreads) {
  TempDir t;
  write_image(t / "img");
  flip_byte_in_block(t / "img/pages.bin", 5);
  auto r = ImageReader::open(t / "img");  // sizes are intact
  for (unsigned jobs : {1u, 4u}) {
    std::string msg = error_of([&] { read_back(r, {jobs, size_t{64} << 20}); });
    EXPECT_NE(msg.find("pages.bin: block 5 "), std::string::npos) << msg;
    EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
  }
}

// Raw blocks of 4 MiB: no more threads read than the memory holds such a
// read and a decompressed block for, whatever `jobs` says.
TEST(ReadBlocks, ThreadsBoundedByTheMemoryForLargeBlocks) {
  TempDir t;
  std::mt19937_64 rng(4);
  constexpr uint64_t kRaw = 4 * 1024;  // four raw blocks of 1024 pages
  {
    auto w = ImageWriter::create(t / "img", false);
    for (uint64_t i = 0; i < kRaw; ++i) {
      Page p = random_page(rng);
      w.add_pages(kPid, kStart, kStart + i * kPageSize, p.data(), 1);
    }
    w.commit(one_mapping(kRaw));
  }
  auto r = ImageReader::open(t / "img");
  ASSERT_EQ(r.stats().blocks, 4u);
  std::vector<BlockId> blocks;
  for (uint64_t b = 0; b < 4; ++b) blocks.push_back({0, b});
  for (auto [memory, most] : {std::pair{size_t{9} << 20, size_t{2}}, {size_t{1}, size_t{1}},
                              {size_t{64} << 20, size_t{4}}}) {
    std::mutex mu;
    std::set<std::thread::id> threads;
    read_blocks(r, blocks, {8, memory}, [&](const BlockPages&) {
      {
        std::lock_guard lock(mu);
        threads.insert(std::this_thread::get_id());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(30));  // let the others take theirs
    });
    EXPECT_LE(threads.size(), most) << memory << " bytes";
    if (memory == size_t{64} << 20) {
      EXPECT_GT(threads.size(), 1u);
    }
  }
}

TEST(ReadBlocks, WhatTheFunctionThrowsStopsTheOthersAndComesBack) {
  TempDir t;
  write_image(t / "img");
  auto r = ImageReader::open(t / "img");
  auto blocks = blocks_of(pieces_of(r));
  std::atomic<int> calls{0};
  std::string msg = error_of([&] {
    read_blocks(r, blocks, {4, size_t{4} << 20}, [&](const BlockPages& b) {
      calls++;
      if (b.id.block == 2) throw Error("no room in the target");
    });
  });
  EXPECT_EQ(msg, "no room in the target");
  EXPECT_LE(calls.load(), static_cast<int>(blocks.size()));
}

}  // namespace
}  // namespace snap::image
