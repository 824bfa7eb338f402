#include "tracer/symbols.h"

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>

#include <algorithm>
#include <cerrno>
#include <fmt/core.h>
#include <memory>

#include "base/error.h"
#include "base/scoped_fd.h"
#include "tracer/elf_handle.h"

namespace snap {

namespace {

// Among aliases at one address, prefer functions, then global over weak over
// local names: that is the name a reader recognizes.
// Sized symbols come before size-0 ones at the same address.
int rank_of(const GElf_Sym& s) {
  int r = (s.st_size == 0 ? 8 : 0) + (GELF_ST_TYPE(s.st_info) == STT_FUNC ? 0 : 4);
  switch (GELF_ST_BIND(s.st_info)) {
    case STB_GLOBAL: break;
    case STB_WEAK: r += 1; break;
    default: r += 2; break;
  }
  return r;
}

bool wanted(const GElf_Sym& s) {
  if (s.st_shndx == SHN_UNDEF || s.st_shndx == SHN_ABS) return false;
  switch (GELF_ST_TYPE(s.st_info)) {
    case STT_FUNC:
    case STT_OBJECT:
    case STT_NOTYPE:
    case STT_GNU_IFUNC: return true;
    default: return false;  // sections, files, TLS offsets
  }
}

}  // namespace

// Fills an ElfSymbols from an open libelf handle.
class ElfSymbols::Loader {
 public:
  static void load(Elf* elf, ElfSymbols& out) {
    auto fail = [&](const std::string& what) -> void {
      throw Error(fmt::format("{}: {}", out.name_, what));
    };
    if (elf_kind(elf) != ELF_K_ELF) fail("not an ELF file");
    size_t nphdr = 0;
    if (elf_getphdrnum(elf, &nphdr) != 0) fail("cannot count program headers: " + elf_error());
    for (size_t i = 0; i < nphdr; i++) {
      GElf_Phdr ph;
      if (!gelf_getphdr(elf, static_cast<int>(i), &ph))
        fail(fmt::format("cannot read program header {}: {}", i, elf_error()));
      if (ph.p_type == PT_LOAD) out.loads_.push_back({ph.p_offset, ph.p_filesz, ph.p_vaddr, ph.p_memsz});
    }

    // .symtab is a superset of .dynsym when present.
    Elf_Scn* symtab = nullptr;
    Elf_Scn* dynsym = nullptr;
    for (Elf_Scn* scn = elf_nextscn(elf, nullptr); scn; scn = elf_nextscn(elf, scn)) {
      GElf_Shdr sh;
      if (!gelf_getshdr(scn, &sh)) fail("cannot read a section header: " + elf_error());
      if (sh.sh_type == SHT_SYMTAB) symtab = scn;
      if (sh.sh_type == SHT_DYNSYM) dynsym = scn;
    }
    Elf_Scn* scn = symtab ? symtab : dynsym;
    if (!scn) return;
    out.table_ = symtab ? ".symtab" : ".dynsym";

    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh)) fail("cannot read the symbol table header: " + elf_error());
    Elf_Data* data = elf_getdata(scn, nullptr);
    if (!data || sh.sh_entsize == 0) fail("cannot read " + out.table_ + ": " + elf_error());
    const size_t count = sh.sh_size / sh.sh_entsize;
    for (size_t i = 0; i < count; i++) {
      GElf_Sym s;
      if (!gelf_getsym(data, static_cast<int>(i), &s)) fail("cannot read a symbol: " + elf_error());
      if (!wanted(s)) continue;
      const char* name = elf_strptr(elf, sh.sh_link, s.st_name);
      if (!name || !*name) continue;
      out.syms_.push_back({s.st_value, s.st_size, rank_of(s), name});
      out.max_size_ = std::max<uint64_t>(out.max_size_, s.st_size);
    }
    std::sort(out.syms_.begin(), out.syms_.end(), [](const Sym& a, const Sym& b) {
      if (a.value != b.value) return a.value < b.value;
      if (a.rank != b.rank) return a.rank < b.rank;
      return a.name < b.name;
    });
  }
};

ElfSymbols ElfSymbols::open(const std::string& path) {
  init_libelf();
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw SysError("open(" + path + ")", errno);
  ElfPtr elf(elf_begin(fd.get(), ELF_C_READ_MMAP, nullptr));
  if (!elf) throw Error(fmt::format("{}: cannot read as ELF: {}", path, elf_error()));
  ElfSymbols out;
  out.name_ = path;
  Loader::load(elf.get(), out);
  return out;
}

ElfSymbols ElfSymbols::from_memory(std::span<const uint8_t> bytes, const std::string& name) {
  init_libelf();
  // libelf wants a mutable buffer and reads from it until elf_end.
  std::vector<char> copy(bytes.begin(), bytes.end());
  ElfPtr elf(elf_memory(copy.data(), copy.size()));
  if (!elf) throw Error(fmt::format("{}: cannot read as ELF: {}", name, elf_error()));
  ElfSymbols out;
  out.name_ = name;
  Loader::load(elf.get(), out);
  return out;
}

std::optional<uint64_t> ElfSymbols::vaddr_of_file_offset(uint64_t off) const {
  for (const auto& l : loads_)
    if (off >= l.offset && off - l.offset < l.filesz) return off - l.offset + l.vaddr;
  return std::nullopt;
}

bool ElfSymbols::same_segment(uint64_t a, uint64_t b) const {
  if (loads_.empty()) return true;  // an object file: no segments to go by
  for (const auto& l : loads_)
    if (a - l.vaddr < l.memsz) return b - l.vaddr < l.memsz;
  return false;
}

std::optional<SymbolHit> ElfSymbols::lookup(uint64_t vaddr) const {
  // The first symbol above vaddr; everything before it starts at or below.
  auto it = std::upper_bound(syms_.begin(), syms_.end(), vaddr,
                             [](uint64_t v, const Sym& s) { return v < s.value; });
  if (it == syms_.begin()) return std::nullopt;
  const uint64_t nearest = std::prev(it)->value;
  // Walk down by address. A sized symbol further down can still cover vaddr
  // (nested or overlapping symbols), but none below vaddr - max_size_ can.
  // Size-0 symbols count only at the nearest address, and only in the same
  // segment (so _end does not claim everything above the file).
  while (it != syms_.begin()) {
    --it;
    const uint64_t off = vaddr - it->value;
    const bool covers = it->size > 0 ? off < it->size
                                     : it->value == nearest && same_segment(it->value, vaddr);
    if (covers) return SymbolHit{it->name, off};
    if (off >= max_size_) break;
  }
  return std::nullopt;
}

std::optional<SymbolHit> ElfSymbols::lookup_file_offset(uint64_t off) const {
  auto vaddr = vaddr_of_file_offset(off);
  if (!vaddr) return std::nullopt;
  return lookup(*vaddr);
}

std::optional<uint64_t> ElfSymbols::find(std::string_view name) const {
  for (const auto& s : syms_)
    if (s.name == name) return s.value;
  return std::nullopt;
}

std::vector<ElfSymbols::Sized> ElfSymbols::sized_symbols() const {
  std::vector<Sized> out;
  for (const auto& s : syms_)
    if (s.size) out.push_back({s.name, s.value, s.size});
  return out;
}

std::string format_symbol(const std::string& path, const SymbolHit& hit) {
  auto slash = path.rfind('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (hit.name.empty()) return fmt::format("{}+{:#x}", base, hit.offset);
  if (hit.offset == 0) return base + "!" + hit.name;
  return fmt::format("{}!{}+{:#x}", base, hit.name, hit.offset);
}

}  // namespace snap
