// Where a function of the vDSO keeps its return address at each of its
// instructions: the call frame information (.eh_frame) the kernel builds
// into every vDSO image, read with libdw. It lets a dump run a thread it
// found inside the vDSO on to the function's caller in one go (vdso.h)
// instead of one instruction at a time.
#pragma once

#include <elfutils/libdw.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/remote_ptr.h"
#include "tracer/elf_handle.h"

namespace snap {

class Registers;

class VdsoFrames {
 public:
  // `image`: a process's [vdso] as it is mapped at `start` (a copy is
  // kept). An image that is not ELF or has no CFI finds no slot.
  VdsoFrames(std::span<const uint8_t> image, uint64_t start);
  ~VdsoFrames();
  VdsoFrames(const VdsoFrames&) = delete;
  VdsoFrames& operator=(const VdsoFrames&) = delete;

  // The stack address holding the return address of the function running
  // at regs.ip(), by the CFI's rules at that instruction; nullopt where the
  // image has none there, or rules other than the simple ones a vDSO's
  // compiler writes (the frame's address a register plus an offset, the
  // return address saved at an offset from it).
  std::optional<remote_addr> return_slot(const Registers& regs) const;

 private:
  std::vector<char> image_;  // libelf reads from it until elf_end
  ElfPtr elf_;
  Dwarf_CFI* cfi_ = nullptr;
  uint64_t start_ = 0, end_ = 0;
  uint64_t bias_ = 0;  // where the image is mapped minus its link address
};

}  // namespace snap
