// The kernel's vDSO: the ELF image every process gets mapped ([vdso]), the
// same bytes in all of them under one kernel. snap reads its own copy (to
// find system call instructions, to record it in an image) and the
// functions it exports (to compare another kernel's with this one's).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace snap {

struct OwnVdso {
  const uint8_t* bytes = nullptr;
  uint64_t base = 0, size = 0;
  std::span<const uint8_t> image() const { return {bytes, size}; }
};

// snap's own [vdso] (AT_SYSINFO_EHDR, its size from /proc/self/maps), found
// once. Throws snap::Error when snap has none.
const OwnVdso& own_vdso();

struct VdsoFunction {
  std::string name;  // as exported: "__vdso_clock_gettime", "clock_gettime"
  uint64_t offset = 0, size = 0;  // from the image's start
};

// The sized symbols a vDSO image exports (.dynsym), by offset; aliases
// (clock_gettime, __vdso_clock_gettime) each appear. Throws snap::Error when
// `image` is not an ELF object.
std::vector<VdsoFunction> vdso_functions(std::span<const uint8_t> image);

}  // namespace snap
