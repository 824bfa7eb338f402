// The kernel's vDSO: the ELF image every process gets mapped ([vdso]), the
// same bytes in all of them under one kernel. snap reads its own copy (to
// find system call instructions, to record it in an image) and the
// functions it exports (to compare another kernel's with this one's).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "image/checkpoint.h"
#include "tracer/registers.h"

namespace snap {

class Task;
class VdsoFrames;

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

// A process's [vdso] mapping ([start, end)), as leave_vdso needs it: its
// image, read from the process the first time a thread is found inside.
class VdsoCode {
 public:
  // `mappings`: the process's, kept by the caller while this lives.
  VdsoCode(pid_t pid, uint64_t start, uint64_t end, const std::vector<image::Mapping>& mappings);
  ~VdsoCode();
  VdsoCode(const VdsoCode&) = delete;
  VdsoCode& operator=(const VdsoCode&) = delete;

  bool inside(uint64_t ip) const { return ip >= start_ && ip < end_; }
  pid_t pid() const { return pid_; }
  const VdsoFrames& frames();
  // Whether `addr` is in the vDSO or an executable mapping: where a return
  // address points.
  bool code_at(uint64_t addr) const;

 private:
  pid_t pid_;
  uint64_t start_, end_;
  std::unique_ptr<VdsoFrames> frames_;
  const std::vector<image::Mapping>& mappings_;
};

// How a thread found inside the vDSO left it (leave_vdso).
struct VdsoExit {
  Registers regs;       // the thread's, now
  bool left = false;    // out of the vDSO
  size_t returns = 0;   // functions run on to their return in one go
  size_t steps = 0;     // instructions run one at a time
};

// A thread stopped inside its process's vDSO, as a job reading the clock in
// a tight loop often is, is run on until it has returned to its caller: its
// image then holds no place in this kernel's vDSO code, which another
// kernel's differs from (restore/vdso.h refuses such a thread). Where the
// vDSO's call frame information says where the running function keeps its
// return address, that address is swapped for one that faults, the thread
// let run, its fault at the return caught (and dropped: the job never
// gets it) and the thread put where the return goes, the stack as it was:
// one stop, however long the function takes. Otherwise (no such
// information, SIGSEGV blocked in the thread or ignored by the process,
// which the kernel would undo for the fault, a shadow stack, a function not
// back within kVdsoReturnWaitMs) one instruction at a time, up to
// kMaxVdsoSteps. Not run (left false, regs as given): outside the vDSO
// already, in a job-control stop (it must not run), inside an interrupted
// system call the run would restart; left false too where it is still
// inside after all that.
VdsoExit leave_vdso(Task& t, const Registers& regs, VdsoCode& vdso);
inline constexpr size_t kMaxVdsoSteps = 10000;
inline constexpr int kVdsoReturnWaitMs = 100;

}  // namespace snap
