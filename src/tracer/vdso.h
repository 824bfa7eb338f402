// The kernel's vDSO: the ELF image every process gets mapped ([vdso]), the
// same bytes in all of them under one kernel. snap reads its own copy (to
// find system call instructions, to record it in an image) and the
// functions it exports (to compare another kernel's with this one's).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace snap {

class Registers;
class Task;

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

// A thread stopped inside its process's vDSO ([start, end)), as a job
// reading the clock in a tight loop often is, is run on one instruction at
// a time until it has returned to its caller: its image then holds no
// place in this kernel's vDSO code, which another kernel's differs from
// (restore/vdso.h refuses such a thread). Returns the registers out there,
// or nullopt where the thread is left as it is: outside the vDSO already,
// in a job-control stop (it must not run), inside an interrupted system
// call the step would restart, or still inside after kMaxVdsoSteps
// instructions. `steps` gets the number of instructions run.
std::optional<Registers> step_out_of_vdso(Task& t, const Registers& regs, uint64_t start,
                                          uint64_t end, size_t* steps = nullptr);
inline constexpr size_t kMaxVdsoSteps = 10000;

}  // namespace snap
