// An ELF object as libelf reads it (a file, or an image in memory), closed
// with its owner, and libelf's own words for what went wrong.
#pragma once

#include <libelf.h>

#include <memory>
#include <string>

namespace snap {

struct ElfCloser {
  void operator()(Elf* e) const { elf_end(e); }
};
using ElfPtr = std::unique_ptr<Elf, ElfCloser>;

// Tells libelf which ELF version snap reads (once). Throws snap::Error
// where libelf refuses.
void init_libelf();

// libelf's last error, in words.
std::string elf_error();

}  // namespace snap
