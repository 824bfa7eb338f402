#include "tracer/vdso.h"

#include <sys/auxv.h>
#include <sys/ptrace.h>
#include <unistd.h>

#include "base/error.h"
#include "tracer/proc.h"
#include "tracer/registers.h"
#include "tracer/symbols.h"
#include "tracer/task.h"

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

std::optional<Registers> step_out_of_vdso(Task& t, const Registers& regs, uint64_t start,
                                          uint64_t end, size_t* steps) {
  if (steps) *steps = 0;
  auto inside = [&](const Registers& r) { return r.ip().as_int() >= start && r.ip().as_int() < end; };
  if (!inside(regs) || t.job_control_stop() || regs.in_restartable_syscall()) return std::nullopt;
  // vDSO functions are short and loop only while the kernel updates the
  // clock's data under them (a retry or two): a few hundred instructions.
  for (size_t n = 1; n <= kMaxVdsoSteps; n++) {
    t.resume_and_wait(PTRACE_SINGLESTEP);  // other signals are held until detach
    Registers now = t.regs();
    if (!inside(now)) {
      if (steps) *steps = n;
      return now;
    }
  }
  if (steps) *steps = kMaxVdsoSteps;
  return std::nullopt;
}

}  // namespace snap
