// ELF symbol lookup for addresses in a mapped file: which function an
// instruction pointer is in. Used by `snap info` to say where each thread
// stopped, and usable anywhere an address needs a name.
//
// A mapping maps the file at some offset; an address inside it becomes a
// file offset (addr - start + pgoff), the file offset becomes the ELF's
// virtual address through the PT_LOAD segment that holds it, and that is
// looked up in .symtab (or .dynsym when the file is stripped).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace snap {

struct SymbolHit {
  std::string name;
  uint64_t offset = 0;  // from the symbol's start
};

class ElfSymbols {
 public:
  // Reads the program headers and the symbol table of an ELF file, or of an
  // ELF image in memory (such as a dumped [vdso]). Throws snap::Error naming
  // the file when it cannot be opened or is not an ELF object. A file with
  // neither .symtab nor .dynsym loads with no symbols.
  static ElfSymbols open(const std::string& path);
  static ElfSymbols from_memory(std::span<const uint8_t> bytes, const std::string& name);

  // The ELF virtual address of a file offset, via the PT_LOAD segment whose
  // file range covers it; nullopt when no segment does.
  std::optional<uint64_t> vaddr_of_file_offset(uint64_t off) const;

  // The symbol an address falls in: among symbols at or below vaddr, the one
  // with the greatest value whose [value, value+size) covers vaddr; a sized
  // symbol that ends below vaddr does not count, but the nearest preceding
  // symbol of size 0 does (hand-written assembly often has no size) when it
  // lies in the same PT_LOAD segment as vaddr.
  std::optional<SymbolHit> lookup(uint64_t vaddr) const;
  std::optional<SymbolHit> lookup_file_offset(uint64_t off) const;

  // The value (ELF virtual address) of a defined symbol by name.
  std::optional<uint64_t> find(std::string_view name) const;

  struct Sized {
    std::string name;
    uint64_t value = 0, size = 0;
  };
  // Every symbol with a size, by address.
  std::vector<Sized> sized_symbols() const;

  const std::string& name() const { return name_; }
  // ".symtab", ".dynsym", or "" when the file has no symbols.
  const std::string& table() const { return table_; }
  size_t size() const { return syms_.size(); }

 private:
  struct Sym {
    uint64_t value = 0, size = 0;
    int rank = 0;  // among symbols at the same address, lower is preferred
    std::string name;
  };
  struct Load {
    uint64_t offset = 0, filesz = 0, vaddr = 0, memsz = 0;
  };
  bool same_segment(uint64_t a, uint64_t b) const;
  class Loader;

  std::string name_;
  std::string table_;
  std::vector<Sym> syms_;  // sorted by (value, rank, name)
  std::vector<Load> loads_;
  uint64_t max_size_ = 0;  // largest st_size, bounds the backward scan
};

// "libc.so.6!__clock_nanosleep+0x5d": the file's base name, then the symbol
// and offset (no "+0x0" for an exact hit). With an empty name, the offset
// is a file offset: "libc.so.6+0x9a3d0".
std::string format_symbol(const std::string& path, const SymbolHit& hit);

}  // namespace snap
