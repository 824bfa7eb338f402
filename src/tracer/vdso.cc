#include "tracer/vdso.h"

#include <sys/auxv.h>
#include <unistd.h>

#include "base/error.h"
#include "tracer/proc.h"
#include "tracer/symbols.h"

namespace snap {

const OwnVdso& own_vdso() {
  static const OwnVdso vdso = [] {
    OwnVdso v;
    v.base = getauxval(AT_SYSINFO_EHDR);
    if (!v.base) throw Error("snap has no vDSO (AT_SYSINFO_EHDR missing)");
    for (const auto& m : proc::read_mappings(::getpid(), proc::MapDetail::kRangesOnly))
      if (m.kind == image::MappingKind::Vdso) v.size = m.end - m.start;
    if (!v.size) throw Error("cannot find snap's own [vdso] mapping");
    v.bytes = reinterpret_cast<const uint8_t*>(v.base);
    return v;
  }();
  return vdso;
}

std::vector<VdsoFunction> vdso_functions(std::span<const uint8_t> image) {
  const ElfSymbols syms = ElfSymbols::from_memory(image, "[vdso]");
  // Symbol values are link-time addresses; the image's first byte is the
  // one its first segment loads at file offset 0.
  const auto base = syms.vaddr_of_file_offset(0);
  if (!base) throw Error("[vdso]: no segment loads its first page");
  std::vector<VdsoFunction> out;
  for (const auto& s : syms.sized_symbols())
    if (s.value >= *base && s.value - *base + s.size <= image.size())
      out.push_back({s.name, s.value - *base, s.size});
  return out;
}

}  // namespace snap
