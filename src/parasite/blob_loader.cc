#include "parasite/blob_loader.h"

#include <gelf.h>
#include <libelf.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <fmt/core.h>
#include <memory>

#include "base/error.h"
#include "tracer/elf_handle.h"

namespace snap::parasite {
namespace {

constexpr uint64_t kPage = 4096;
constexpr const char* kHint =
    "the parasite blob is built by src/parasite/meson.build; rebuild snap "
    "(a corrupted or foreign ELF cannot be loaded)";

uint64_t page_down(uint64_t v) { return v & ~(kPage - 1); }
uint64_t page_up(uint64_t v) { return (v + kPage - 1) & ~(kPage - 1); }

[[noreturn]] void fail(const std::string& what) {
  throw Error("parasite blob: " + what, kHint);
}

const char* reloc_name(uint32_t type) {
  switch (type) {
    case R_X86_64_64: return "R_X86_64_64";
    case R_X86_64_PC32: return "R_X86_64_PC32";
    case R_X86_64_GLOB_DAT: return "R_X86_64_GLOB_DAT";
    case R_X86_64_JUMP_SLOT: return "R_X86_64_JUMP_SLOT";
    case R_X86_64_COPY: return "R_X86_64_COPY";
    case R_X86_64_IRELATIVE: return "R_X86_64_IRELATIVE";
    case R_X86_64_DTPMOD64: return "R_X86_64_DTPMOD64";
    case R_X86_64_TPOFF64: return "R_X86_64_TPOFF64";
    default: return "unknown";
  }
}

int prot_of(uint32_t pflags) {
  int prot = 0;
  if (pflags & PF_R) prot |= PROT_READ;
  if (pflags & PF_W) prot |= PROT_WRITE;
  if (pflags & PF_X) prot |= PROT_EXEC;
  return prot;
}

}  // namespace

std::optional<remote_addr> LoadedBlob::find_symbol(std::string_view name) const {
  auto it = symbols_.find(name);
  if (it == symbols_.end()) return std::nullopt;
  return base_ + static_cast<int64_t>(it->second);
}

remote_addr LoadedBlob::symbol(std::string_view name) const {
  return base_ + static_cast<int64_t>(symbol_offset(name));
}

uint64_t LoadedBlob::symbol_offset(std::string_view name) const {
  auto it = symbols_.find(name);
  if (it == symbols_.end())
    throw Error(fmt::format("parasite blob: no symbol '{}'", name), kHint);
  return it->second;
}

LoadedBlob prepare_blob(std::span<const uint8_t> elf_bytes, remote_addr base) {
  if (base.as_int() % kPage)
    throw Error(fmt::format("parasite blob: load address {:#x} is not page aligned", base.as_int()));
  init_libelf();
  // libelf wants a mutable buffer; keep our own copy alive for its lifetime.
  std::vector<char> copy(elf_bytes.begin(), elf_bytes.end());
  ElfPtr elf(elf_memory(copy.data(), copy.size()));
  if (!elf) fail("elf_memory: " + elf_error());
  if (elf_kind(elf.get()) != ELF_K_ELF) fail("not an ELF file");

  GElf_Ehdr eh;
  if (!gelf_getehdr(elf.get(), &eh)) fail("cannot read the ELF header: " + elf_error());
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB)
    fail("not a little-endian ELF64 file");
  if (eh.e_machine != EM_X86_64) fail(fmt::format("machine {} is not x86_64", eh.e_machine));
  if (eh.e_type != ET_DYN) fail(fmt::format("ELF type {} is not ET_DYN (position independent)", eh.e_type));

  size_t nphdr = 0;
  if (elf_getphdrnum(elf.get(), &nphdr) != 0) fail("cannot count program headers: " + elf_error());

  // Pass 1: the span of the PT_LOAD segments.
  std::vector<GElf_Phdr> loads;
  for (size_t i = 0; i < nphdr; i++) {
    GElf_Phdr ph;
    if (!gelf_getphdr(elf.get(), static_cast<int>(i), &ph))
      fail(fmt::format("cannot read program header {}: {}", i, elf_error()));
    if (ph.p_type != PT_LOAD) continue;
    if (ph.p_filesz > ph.p_memsz)
      fail(fmt::format("segment {} has file size {:#x} > memory size {:#x}", i, ph.p_filesz, ph.p_memsz));
    if (ph.p_offset > elf_bytes.size() || ph.p_filesz > elf_bytes.size() - ph.p_offset)
      fail(fmt::format("segment {} [{:#x}, +{:#x}) lies outside the {}-byte file", i, ph.p_offset,
                       ph.p_filesz, elf_bytes.size()));
    if (ph.p_memsz > (uint64_t{1} << 32) || ph.p_vaddr > (uint64_t{1} << 32))
      fail(fmt::format("segment {} at {:#x} size {:#x} is implausibly large", i, ph.p_vaddr, ph.p_memsz));
    loads.push_back(ph);
  }
  if (loads.empty()) fail("no PT_LOAD segments");
  std::sort(loads.begin(), loads.end(),
            [](const GElf_Phdr& a, const GElf_Phdr& b) { return a.p_vaddr < b.p_vaddr; });
  const uint64_t lo = page_down(loads.front().p_vaddr);
  uint64_t hi = 0;
  for (auto& ph : loads) hi = std::max(hi, page_up(ph.p_vaddr + ph.p_memsz));

  LoadedBlob out;
  out.base_ = base;
  out.image_.assign(hi - lo, 0);  // .bss and gaps are zero
  for (auto& ph : loads) {
    std::memcpy(out.image_.data() + (ph.p_vaddr - lo), elf_bytes.data() + ph.p_offset, ph.p_filesz);
    if (ph.p_filesz) out.written_ = std::max(out.written_, page_up(ph.p_vaddr + ph.p_filesz) - lo);
    BlobSegment seg{page_down(ph.p_vaddr) - lo, page_up(ph.p_vaddr + ph.p_memsz) - page_down(ph.p_vaddr),
                    prot_of(ph.p_flags)};
    // Segments sharing a page get the union of their protections.
    if (!out.segments_.empty()) {
      BlobSegment& prev = out.segments_.back();
      if (seg.offset < prev.offset + prev.size) {
        uint64_t end = std::max(prev.offset + prev.size, seg.offset + seg.size);
        prev.prot |= seg.prot;
        prev.size = end - prev.offset;
        continue;
      }
    }
    out.segments_.push_back(seg);
  }
  auto in_loaded = [&](uint64_t vaddr, uint64_t len) {
    return std::any_of(loads.begin(), loads.end(), [&](const GElf_Phdr& ph) {
      return vaddr >= ph.p_vaddr && len <= ph.p_memsz && vaddr - ph.p_vaddr <= ph.p_memsz - len;
    });
  };

  // Pass 2: sections: relocations and symbols.
  const int64_t delta = static_cast<int64_t>(base.as_int() - lo);
  Elf_Scn* scn = nullptr;
  bool have_symbols = false;
  while ((scn = elf_nextscn(elf.get(), scn)) != nullptr) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh)) fail("cannot read a section header: " + elf_error());
    if (sh.sh_type == SHT_REL) fail("SHT_REL relocations are not supported (expected RELA)");
    if (sh.sh_type == SHT_RELA) {
      Elf_Data* d = elf_getdata(scn, nullptr);
      if (!d || sh.sh_entsize == 0) fail("cannot read relocation section: " + elf_error());
      size_t n = sh.sh_size / sh.sh_entsize;
      for (size_t i = 0; i < n; i++) {
        GElf_Rela r;
        if (!gelf_getrela(d, static_cast<int>(i), &r)) fail("cannot read relocation: " + elf_error());
        uint32_t type = GELF_R_TYPE(r.r_info);
        if (type == R_X86_64_NONE) continue;
        if (type != R_X86_64_RELATIVE)
          fail(fmt::format("unsupported relocation type {} ({}) at {:#x}; the blob must be position "
                           "independent with hidden symbols (only R_X86_64_RELATIVE)",
                           type, reloc_name(type), r.r_offset));
        if (!in_loaded(r.r_offset, 8))
          fail(fmt::format("relocation at {:#x} is outside the loaded segments", r.r_offset));
        uint64_t v = static_cast<uint64_t>(r.r_addend + delta);
        std::memcpy(out.image_.data() + (r.r_offset - lo), &v, 8);
        out.relocated_.push_back(r.r_offset - lo);
        out.written_ = std::max(out.written_, page_up(r.r_offset + 8) - lo);
      }
    } else if (sh.sh_type == SHT_SYMTAB || sh.sh_type == SHT_DYNSYM) {
      Elf_Data* d = elf_getdata(scn, nullptr);
      if (!d || sh.sh_entsize == 0) fail("cannot read symbol table: " + elf_error());
      size_t n = sh.sh_size / sh.sh_entsize;
      for (size_t i = 1; i < n; i++) {
        GElf_Sym s;
        if (!gelf_getsym(d, static_cast<int>(i), &s)) fail("cannot read symbol: " + elf_error());
        if (s.st_shndx == SHN_UNDEF || s.st_shndx == SHN_ABS) continue;
        int t = GELF_ST_TYPE(s.st_info);
        if (t != STT_FUNC && t != STT_OBJECT && t != STT_NOTYPE) continue;
        const char* name = elf_strptr(elf.get(), sh.sh_link, s.st_name);
        if (!name || !*name) continue;
        if (s.st_value < lo || s.st_value > hi) fail(fmt::format("symbol '{}' lies outside the image", name));
        out.symbols_.emplace(name, s.st_value - lo);  // a name in both tables: same value
        have_symbols = true;
      }
    }
  }
  if (!have_symbols) fail("no symbols (was the blob stripped?)");
  return out;
}

}  // namespace snap::parasite
