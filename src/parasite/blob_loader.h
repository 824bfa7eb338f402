// Host side of loading the parasite: turns the blob's ELF file into the
// exact bytes to place at a chosen address in the target (segments at their
// offsets, .bss zeroed, R_X86_64_RELATIVE relocations applied for that
// address) and resolves its entry points and data symbols by name.
// Nothing here touches the target: the caller maps image().size() bytes at
// base() (fresh anonymous memory, so zero), writes its first written_size()
// bytes, then applies segments()' protections.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/remote_ptr.h"

namespace snap::parasite {

// A page-aligned piece of the image and the protection it wants.
struct BlobSegment {
  uint64_t offset = 0;  // from the start of the image, page aligned
  uint64_t size = 0;    // page multiple
  int prot = 0;         // PROT_READ | PROT_WRITE | PROT_EXEC
};

class LoadedBlob {
 public:
  remote_addr base() const { return base_; }
  // The whole span of the PT_LOAD segments, page rounded: write it at base().
  const std::vector<uint8_t>& image() const { return image_; }
  uint64_t size() const { return image_.size(); }
  // The bytes of image() before its zero tail (.bss past the last file
  // byte, page rounded): what must be written into zeroed memory.
  uint64_t written_size() const { return written_; }
  const std::vector<BlobSegment>& segments() const { return segments_; }
  // Image offsets of the 8-byte words relocations were applied to.
  const std::vector<uint64_t>& relocated_offsets() const { return relocated_; }

  // Address of a symbol in the target once the image is at base(); throws
  // snap::Error naming the symbol when the blob has none of that name.
  remote_addr symbol(std::string_view name) const;
  std::optional<remote_addr> find_symbol(std::string_view name) const;
  // Offset of a symbol from base(), for code that looks into image().
  uint64_t symbol_offset(std::string_view name) const;

 private:
  friend LoadedBlob prepare_blob(std::span<const uint8_t> elf, remote_addr base);
  remote_addr base_;
  std::vector<uint8_t> image_;
  uint64_t written_ = 0;
  std::vector<BlobSegment> segments_;
  std::vector<uint64_t> relocated_;
  std::map<std::string, uint64_t, std::less<>> symbols_;  // name -> image offset
};

// Parses `elf` (an x86_64 ET_DYN as built by src/parasite/meson.build) with
// libelf and lays it out for `base` (page aligned). Throws snap::Error with
// what is wrong for a malformed or unsupported file (bad header, segments
// outside the file, relocation types other than RELATIVE/NONE, ...).
LoadedBlob prepare_blob(std::span<const uint8_t> elf, remote_addr base);

}  // namespace snap::parasite
