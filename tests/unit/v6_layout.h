// For the image tests: rewrites a page store written today (FORMAT.md,
// version 7) in the layout of version 6, as snap up to 0.1.0 of 2026-12-02
// wrote it: a 32-byte header before every block, blocks of 64 pages (raw
// ones split and summed as a whole), 16-byte index entries, (block, slot)
// in the page hashes, pagemap.bin uncompressed. Readers must still read
// such images (and series whose older packs are such).
#pragma once

#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <utility>
#include <string>
#include <vector>

#include "image/format.h"
#include "image/lz4_frame.h"
#include "image/manifest.h"
#include "image/manifest_file.h"

namespace snap::test_support {

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

inline image::FileEntry spill(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  return {bytes.size(), XXH3_64bits(bytes.data(), bytes.size())};
}

// Rewrites data file `data` and index `index` (version 7) in place; returns
// their new entries (data, index).
inline std::pair<image::FileEntry, image::FileEntry> pack_to_v6(const std::string& data,
                                                                const std::string& index) {
  namespace disk = image::disk;
  const std::string in = slurp(data), idx = slurp(index);
  disk::IndexHeader h;
  std::memcpy(&h, idx.data(), sizeof h);
  const bool hashes = std::memcmp(h.magic, disk::kIndex7Magic, 8) == 0;
  std::string out, table;
  uint64_t nblocks = 0;
  auto put = [&](const char* stored, uint32_t len, uint16_t npages, uint16_t flags,
                 uint64_t checksum) {
    disk::BlockHeader bh{disk::kBlockMagic, flags, npages,
                         static_cast<uint32_t>(npages * image::kPageSize), len, nblocks,
                         checksum};
    disk::IndexBlock e{out.size(), len, npages, flags};
    table.append(reinterpret_cast<const char*>(&e), sizeof e);
    out.append(reinterpret_cast<const char*>(&bh), sizeof bh);
    out.append(stored, len);
    ++nblocks;
  };
  for (uint64_t b = 0; b < h.nblocks; ++b) {
    disk::IndexBlock7 e;
    std::memcpy(&e, idx.data() + sizeof h + b * sizeof e, sizeof e);
    const char* stored = in.data() + e.offset;
    if (!(e.flags & disk::kBlockRaw)) {
      put(stored, e.stored_len, e.npages, e.flags, e.checksum);
      continue;
    }
    for (uint32_t done = 0; done < e.npages; done += disk::kBlockPages) {
      uint32_t n = std::min<uint32_t>(disk::kBlockPages, e.npages - done);
      const char* p = stored + uint64_t{done} * image::kPageSize;
      put(p, static_cast<uint32_t>(n * image::kPageSize), static_cast<uint16_t>(n),
          disk::kBlockRaw, XXH3_64bits(p, n * image::kPageSize));
    }
  }
  disk::IndexHeader nh = h;
  std::memcpy(nh.magic, hashes ? disk::kIndexMagic : disk::kIndexBlocksMagic, 8);
  nh.nblocks = nblocks;
  std::string new_idx(reinterpret_cast<const char*>(&nh), sizeof nh);
  new_idx += table;
  for (uint64_t i = 0; hashes && i < h.npages; ++i) {
    disk::IndexPage7 p7;
    std::memcpy(&p7, idx.data() + sizeof h + h.nblocks * sizeof(disk::IndexBlock7) + i * sizeof p7,
                sizeof p7);
    disk::IndexPage p6{};
    std::memcpy(p6.hash, p7.hash, sizeof p6.hash);
    p6.block = static_cast<uint32_t>(p7.page / disk::kBlockPages);
    p6.slot = static_cast<uint32_t>(p7.page % disk::kBlockPages);
    new_idx.append(reinterpret_cast<const char*>(&p6), sizeof p6);
  }
  return {spill(data, out), spill(index, new_idx)};
}

// The manifest of image (or series checkpoint) `dir` as version 6, its
// pagemap uncompressed; `packs` (series: name -> new entries) replace
// those the manifest lists.
using PackEntries = std::map<std::string, std::pair<image::FileEntry, image::FileEntry>>;
inline void manifest_to_v6(const std::string& dir, const PackEntries& packs = {},
                           const std::map<std::string, image::FileEntry>& files = {}) {
  image::Manifest m = image::read_manifest(dir);
  const std::string frame = slurp(dir + "/pagemap.bin.lz4");
  m.files.erase("pagemap.bin.lz4");
  std::remove((dir + "/pagemap.bin.lz4").c_str());
  m.files["pagemap.bin"] =
      spill(dir + "/pagemap.bin", image::lz4_unframe("pagemap", frame, uint64_t{1} << 30, ""));
  for (auto& p : m.packs)
    if (auto it = packs.find(p.name); it != packs.end()) {
      p.data = it->second.first;
      p.index = it->second.second;
    }
  for (const auto& [name, e] : files) m.files[name] = e;
  m.checkpoint.format_version = 6;
  std::ofstream(dir + "/manifest.json", std::ios::trunc) << image::manifest_file_json(m);
}

// A plain image written today, rewritten as version 6.
inline void image_to_v6(const std::string& dir) {
  auto [data, index] = pack_to_v6(dir + "/pages.bin", dir + "/pages.idx");
  manifest_to_v6(dir, {}, {{"pages.bin", data}, {"pages.idx", index}});
}

}  // namespace snap::test_support
