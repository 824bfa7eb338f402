// On-disk records of the page store (pages.bin, pages.idx, pagemap.bin).
// Internal to src/image: the writer and the reader share these, nobody else
// should need them. FORMAT.md is the normative description; keep the two in
// step. All integers are little-endian (snap is x86_64 only), structs are
// written as-is and their sizes are pinned by static_asserts below.
#pragma once

#include <cstdint>
#include <cstring>

#include "image/checkpoint.h"

namespace snap::image::disk {

// File names inside an image directory.
inline constexpr const char* kManifestFile = "manifest.json";
inline constexpr const char* kCheckpointFile = "checkpoint.json.lz4";  // from version 6
inline constexpr const char* kPagesFile = "pages.bin";
inline constexpr const char* kIndexFile = "pages.idx";
inline constexpr const char* kPagemapFile = "pagemap.bin";             // to version 6
inline constexpr const char* kPagemapFrameFile = "pagemap.bin.lz4";   // from version 7

// Unique pages per block: 64 pages = 256 KiB raw. From version 7 a block
// stored raw holds up to kRawBlockPages pages (consecutive raw blocks of
// the writer joined into one: one index entry and checksum per 4 MiB).
inline constexpr uint32_t kBlockPages = 64;
inline constexpr uint64_t kBlockRawBytes = kBlockPages * kPageSize;
inline constexpr uint32_t kRawBlockPages = 1024;
inline constexpr uint64_t kRawBlockBytes = kRawBlockPages * kPageSize;

inline constexpr uint32_t kBlockMagic = 0x42504E53;  // "SNPB"
inline constexpr uint16_t kBlockRaw = 1;             // flags: stored uncompressed
// flags, with kBlockRaw (from version 16): the block's checksum is the sum
// of its pages' (raw_block_checksum, pack.h), so that a page written over
// in place changes it by that page's terms alone.
inline constexpr uint16_t kBlockPageSums = 2;

// Precedes every block in pages.bin, to version 6 (the index entry holds
// all of it from version 7, and pages.bin the stored bytes alone).
struct BlockHeader {
  uint32_t magic;
  uint16_t flags;
  uint16_t npages;      // pages in this block, 1..kBlockPages
  uint32_t raw_len;     // npages * kPageSize
  uint32_t stored_len;  // bytes following this header
  uint64_t block;       // block number, = its position in the file
  uint64_t checksum;    // XXH3-64 of the stored bytes
};
static_assert(sizeof(BlockHeader) == 32);

// pages.idx: IndexHeader, nblocks x IndexBlock, then npages x IndexPage
// (kIndexMagic: the packs of a series, and plain images before version 6)
// or nothing (kIndexBlocksMagic: plain images from version 6, which no
// later image refers to by hash). From version 7 (kIndex7*): nblocks x
// IndexBlock7, then npages x IndexPage7 or nothing, and no BlockHeader in
// pages.bin. The magic, not the manifest's version, says which: the packs
// of one series may be of both.
inline constexpr char kIndexMagic[8] = {'S', 'N', 'A', 'P', 'I', 'D', 'X', '1'};
inline constexpr char kIndexBlocksMagic[8] = {'S', 'N', 'A', 'P', 'I', 'D', 'X', '2'};
inline constexpr char kIndex7Magic[8] = {'S', 'N', 'A', 'P', 'I', 'D', 'X', '3'};
inline constexpr char kIndex7BlocksMagic[8] = {'S', 'N', 'A', 'P', 'I', 'D', 'X', '4'};
struct IndexHeader {
  char magic[8];
  uint32_t page_size;
  uint32_t block_pages;
  uint64_t nblocks;
  uint64_t npages;  // unique pages
};
static_assert(sizeof(IndexHeader) == 32);

struct IndexBlock {
  uint64_t offset;      // of the BlockHeader in pages.bin
  uint32_t stored_len;  // as in the header
  uint16_t npages;
  uint16_t flags;
};
static_assert(sizeof(IndexBlock) == 16);

struct IndexPage {
  uint8_t hash[16];  // XXH3-128 of the page, canonical (big-endian) form
  uint32_t block;
  uint32_t slot;
};
static_assert(sizeof(IndexPage) == 24);

struct IndexBlock7 {
  uint64_t offset;      // of its stored bytes in pages.bin
  uint64_t checksum;    // XXH3-64 of the stored bytes (kBlockPageSums: of its pages, summed)
  uint32_t stored_len;
  uint16_t npages;      // 1..kBlockPages (lz4), 1..kRawBlockPages (raw)
  uint16_t flags;
};
static_assert(sizeof(IndexBlock7) == 24);

struct IndexPage7 {
  uint8_t hash[16];  // XXH3-128 of the page, canonical (big-endian) form
  uint64_t page;     // unique page number
};
static_assert(sizeof(IndexPage7) == 24);

// pagemap.bin: PagemapHeader, then per mapping a PagemapTable followed by
// its nruns PagemapRun records.
inline constexpr char kPagemapMagic[8] = {'S', 'N', 'A', 'P', 'P', 'M', 'A', 'P'};
struct PagemapHeader {
  char magic[8];
  uint64_t ntables;
};
static_assert(sizeof(PagemapHeader) == 16);

struct PagemapTable {
  int32_t pid;
  uint32_t nruns;
  uint64_t mapping_start;
};
static_assert(sizeof(PagemapTable) == 16);

enum RunKind : uint32_t {
  kRunZero = 0,    // npages zero pages; ref unused (0)
  kRunSeq = 1,     // page i refers to unique page ref + i
  kRunRepeat = 2,  // every page refers to unique page ref
};

struct PagemapRun {
  uint64_t addr;
  uint64_t ref;
  uint32_t npages;
  uint32_t kind;  // RunKind
};
static_assert(sizeof(PagemapRun) == 24);

}  // namespace snap::image::disk
