#include "tracer/cpu_features.h"

#include <cpuid.h>

#include <algorithm>
#include <cstring>
#include <set>

#include <fmt/core.h>

namespace snap::tracer {

namespace {

enum Reg : uint8_t { EAX, EBX, ECX, EDX };

struct FeatureBit {
  uint32_t leaf, sub;
  Reg reg;
  uint8_t bit;
  const char* name;
};

// Instruction-set features user code tests for (glibc's cpu_features,
// compilers' __builtin_cpu_supports, BLAS and numpy dispatch), with the
// names /proc/cpuinfo gives them. Bits that say what the kernel enabled
// (OSXSAVE, OSPKE) or that only the kernel uses are left out: they are
// compared through XCR0, or not at all.
constexpr FeatureBit kFeatures[] = {
    {1, 0, EDX, 0, "fpu"}, {1, 0, EDX, 8, "cx8"}, {1, 0, EDX, 15, "cmov"},
    {1, 0, EDX, 23, "mmx"}, {1, 0, EDX, 24, "fxsr"}, {1, 0, EDX, 25, "sse"},
    {1, 0, EDX, 26, "sse2"},
    {1, 0, ECX, 0, "pni"}, {1, 0, ECX, 1, "pclmulqdq"}, {1, 0, ECX, 9, "ssse3"},
    {1, 0, ECX, 12, "fma"}, {1, 0, ECX, 13, "cx16"}, {1, 0, ECX, 19, "sse4_1"},
    {1, 0, ECX, 20, "sse4_2"}, {1, 0, ECX, 22, "movbe"}, {1, 0, ECX, 23, "popcnt"},
    {1, 0, ECX, 25, "aes"}, {1, 0, ECX, 26, "xsave"}, {1, 0, ECX, 28, "avx"},
    {1, 0, ECX, 29, "f16c"}, {1, 0, ECX, 30, "rdrand"},
    {7, 0, EBX, 0, "fsgsbase"}, {7, 0, EBX, 3, "bmi1"}, {7, 0, EBX, 4, "hle"},
    {7, 0, EBX, 5, "avx2"}, {7, 0, EBX, 8, "bmi2"}, {7, 0, EBX, 9, "erms"},
    {7, 0, EBX, 11, "rtm"}, {7, 0, EBX, 16, "avx512f"}, {7, 0, EBX, 17, "avx512dq"},
    {7, 0, EBX, 18, "rdseed"}, {7, 0, EBX, 19, "adx"}, {7, 0, EBX, 21, "avx512ifma"},
    {7, 0, EBX, 23, "clflushopt"}, {7, 0, EBX, 24, "clwb"}, {7, 0, EBX, 26, "avx512pf"},
    {7, 0, EBX, 27, "avx512er"}, {7, 0, EBX, 28, "avx512cd"}, {7, 0, EBX, 29, "sha_ni"},
    {7, 0, EBX, 30, "avx512bw"}, {7, 0, EBX, 31, "avx512vl"},
    {7, 0, ECX, 1, "avx512vbmi"}, {7, 0, ECX, 5, "waitpkg"}, {7, 0, ECX, 6, "avx512_vbmi2"},
    {7, 0, ECX, 8, "gfni"}, {7, 0, ECX, 9, "vaes"}, {7, 0, ECX, 10, "vpclmulqdq"},
    {7, 0, ECX, 11, "avx512_vnni"}, {7, 0, ECX, 12, "avx512_bitalg"},
    {7, 0, ECX, 14, "avx512_vpopcntdq"}, {7, 0, ECX, 22, "rdpid"}, {7, 0, ECX, 25, "cldemote"},
    {7, 0, ECX, 27, "movdiri"}, {7, 0, ECX, 28, "movdir64b"},
    {7, 0, EDX, 2, "avx512_4vnniw"}, {7, 0, EDX, 3, "avx512_4fmaps"}, {7, 0, EDX, 4, "fsrm"},
    {7, 0, EDX, 8, "avx512_vp2intersect"}, {7, 0, EDX, 14, "serialize"},
    {7, 0, EDX, 16, "tsxldtrk"}, {7, 0, EDX, 22, "amx_bf16"}, {7, 0, EDX, 23, "avx512_fp16"},
    {7, 0, EDX, 24, "amx_tile"}, {7, 0, EDX, 25, "amx_int8"},
    {7, 1, EAX, 4, "avx_vnni"}, {7, 1, EAX, 5, "avx512_bf16"}, {7, 1, EAX, 7, "cmpccxadd"},
    {7, 1, EAX, 21, "amx_fp16"}, {7, 1, EAX, 23, "avx_ifma"},
    {7, 1, EDX, 4, "avx_vnni_int8"}, {7, 1, EDX, 5, "avx_ne_convert"},
    {0xd, 1, EAX, 0, "xsaveopt"}, {0xd, 1, EAX, 1, "xsavec"}, {0xd, 1, EAX, 2, "xgetbv1"},
    {0x80000001, 0, ECX, 0, "lahf_lm"}, {0x80000001, 0, ECX, 5, "abm"},
    {0x80000001, 0, ECX, 6, "sse4a"}, {0x80000001, 0, ECX, 8, "3dnowprefetch"},
    {0x80000001, 0, ECX, 11, "xop"}, {0x80000001, 0, ECX, 16, "fma4"},
    {0x80000001, 0, ECX, 21, "tbm"},
    {0x80000001, 0, EDX, 22, "mmxext"}, {0x80000001, 0, EDX, 27, "rdtscp"},
    {0x80000001, 0, EDX, 30, "3dnowext"}, {0x80000001, 0, EDX, 31, "3dnow"},
    {0x80000008, 0, EBX, 0, "clzero"},
};

struct Regs {
  uint32_t r[4] = {0, 0, 0, 0};
};

// CPUID, or zeros for a leaf past the CPU's highest (in its range: basic
// or extended).
Regs cpuid(uint32_t leaf, uint32_t sub) {
  Regs out;
  const uint32_t range = leaf & 0x80000000u;
  if (__get_cpuid_max(range, nullptr) < leaf) return out;
  __cpuid_count(leaf, sub, out.r[EAX], out.r[EBX], out.r[ECX], out.r[EDX]);
  return out;
}

uint64_t xgetbv0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return uint64_t{hi} << 32 | lo;
}

std::string trimmed(std::string s) {
  s.erase(std::find(s.begin(), s.end(), '\0'), s.end());
  const auto first = s.find_first_not_of(' ');
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(' ') - first + 1);
}

const image::XsaveComponent* component(const image::CpuInfo& c, uint32_t id) {
  for (const auto& x : c.xsave_layout)
    if (x.id == id) return &x;
  return nullptr;
}

constexpr size_t kLegacySize = 512;       // x87 and SSE (FXSAVE)
constexpr size_t kHeaderSize = 64;        // XSTATE_BV, XCOMP_BV, reserved
constexpr size_t kXcr0Offset = 464;       // where ptrace gives XCR0 (sw_reserved)

}  // namespace

std::string xsave_component_name(uint32_t id) {
  static const char* const names[] = {"x87", "sse", "avx", "mpx_bndregs", "mpx_bndcsr",
                                      "avx512_opmask", "avx512_zmm_hi256", "avx512_hi16_zmm",
                                      "pt", "pkru", "pasid", "cet_user", "cet_supervisor",
                                      "hdc", "uintr", "lbr", "hwp", "amx_tilecfg",
                                      "amx_tiledata", "apx"};
  if (id < std::size(names)) return names[id];
  return fmt::format("component {}", id);
}

namespace {

image::CpuInfo read_cpu() {
  image::CpuInfo c;
  Regs v = cpuid(0, 0);
  char vendor[13] = {};
  std::memcpy(vendor, &v.r[EBX], 4);
  std::memcpy(vendor + 4, &v.r[EDX], 4);
  std::memcpy(vendor + 8, &v.r[ECX], 4);
  c.vendor = vendor;
  std::string brand;
  for (uint32_t leaf = 0x80000002; leaf <= 0x80000004; leaf++) {
    Regs b = cpuid(leaf, 0);
    brand.append(reinterpret_cast<const char*>(b.r), sizeof b.r);
  }
  c.model = trimmed(brand);

  for (const auto& f : kFeatures)
    if (cpuid(f.leaf, f.sub).r[f.reg] >> f.bit & 1) c.features.push_back(f.name);
  std::sort(c.features.begin(), c.features.end());

  const bool osxsave = cpuid(1, 0).r[ECX] >> 27 & 1;
  if (osxsave) {
    c.xcr0 = xgetbv0();
    for (uint32_t id = 2; id < 64; id++) {
      if (!(c.xcr0 >> id & 1)) continue;
      Regs x = cpuid(0xd, id);
      if (x.r[EAX]) c.xsave_layout.push_back({id, x.r[EBX], x.r[EAX]});
    }
  }
  return c;
}

}  // namespace

const image::CpuInfo& this_cpu() {
  static const image::CpuInfo cpu = read_cpu();
  return cpu;
}

std::vector<std::string> cpu_lacks(const image::CpuInfo& saved, const image::CpuInfo& here) {
  std::vector<std::string> out;
  const std::set<std::string> have(here.features.begin(), here.features.end());
  for (const auto& f : saved.features)
    if (!have.count(f)) out.push_back(f);
  for (uint32_t id = 0; id < 64; id++)
    if ((saved.xcr0 >> id & 1) && !(here.xcr0 >> id & 1))
      out.push_back("XSAVE state " + xsave_component_name(id));
  return out;
}

std::vector<uint8_t> refit_xsave(std::span<const uint8_t> area, const image::CpuInfo& from,
                                 const image::CpuInfo& to, size_t size,
                                 std::vector<std::string>* dropped) {
  if (area.size() == size && from.xsave_layout == to.xsave_layout)
    return {area.begin(), area.end()};
  std::vector<uint8_t> out(size, 0);
  if (area.size() < kLegacySize + kHeaderSize || size < kLegacySize + kHeaderSize) {
    // No XSAVE header on one side: the legacy area is all there is.
    std::memcpy(out.data(), area.data(), std::min({area.size(), size, kLegacySize}));
    return out;
  }
  std::memcpy(out.data(), area.data(), kLegacySize);
  std::memcpy(out.data() + kXcr0Offset, &to.xcr0, sizeof to.xcr0);
  uint64_t in_use = 0;
  std::memcpy(&in_use, area.data() + kLegacySize, sizeof in_use);
  uint64_t kept = in_use & 3;  // x87 and SSE live in the legacy area
  for (uint32_t id = 2; id < 64; id++) {
    if (!(in_use >> id & 1)) continue;  // in its initial state: nothing to copy
    const auto* a = component(from, id);
    const auto* b = component(to, id);
    const bool fits = a && b && a->size == b->size && a->offset + a->size <= area.size() &&
                      b->offset + b->size <= size;
    if (!fits) {
      if (dropped) dropped->push_back(xsave_component_name(id));
      continue;
    }
    std::memcpy(out.data() + b->offset, area.data() + a->offset, a->size);
    kept |= uint64_t{1} << id;
  }
  std::memcpy(out.data() + kLegacySize, &kept, sizeof kept);  // XCOMP_BV stays 0
  return out;
}

}  // namespace snap::tracer
