#include "tracer/elf_handle.h"

#include "base/error.h"

namespace snap {

std::string elf_error() {
  const char* m = elf_errmsg(-1);
  return m ? m : "unknown libelf error";
}

void init_libelf() {
  static const bool ok = elf_version(EV_CURRENT) != EV_NONE;
  if (!ok) throw Error("libelf initialization failed: " + elf_error());
}

}  // namespace snap
