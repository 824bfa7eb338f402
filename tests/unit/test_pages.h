// For the image tests: incompressible and compressible pages, and damage.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "image/checkpoint.h"

namespace snap::test_support {

using Page = std::vector<uint8_t>;

// Incompressible.
inline Page random_page(std::mt19937_64& rng) {
  Page p(image::kPageSize);
  for (size_t i = 0; i < p.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(&p[i], &v, 8);
  }
  return p;
}

// Distinct per `n` but very compressible.
inline Page text_page(uint64_t n) {
  Page p(image::kPageSize);
  std::string s = "page " + std::to_string(n) + ": the quick brown fox jumps over the lazy dog. ";
  for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<uint8_t>(s[i % s.size()]);
  return p;
}

// Flips one bit of byte 40 of block `block`'s data in a pages.bin, found
// by its entry in the pages.idx beside it (FORMAT.md, version 7: a 32-byte
// header, then 24-byte entries with the offset first).
inline void flip_byte_in_block(const std::string& pages, int block) {
  const std::string index = pages.substr(0, pages.size() - 4) + ".idx";  // pages.bin -> pages.idx
  std::ifstream idx(index, std::ios::binary);
  uint64_t off = 0;
  idx.seekg(32 + 24 * block);
  idx.read(reinterpret_cast<char*>(&off), 8);
  std::fstream f(pages, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(off + 40));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x20);
  f.seekp(static_cast<std::streamoff>(off + 40));
  f.write(&c, 1);
}

}  // namespace snap::test_support
