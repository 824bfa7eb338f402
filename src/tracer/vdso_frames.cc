#include "tracer/vdso_frames.h"

#include <dwarf.h>
#include <gelf.h>

#include <cstdlib>

#include "tracer/registers.h"

namespace snap {

namespace {

// A register by its DWARF number on x86-64 (the psABI's numbering).
std::optional<uint64_t> dwarf_register(const Registers& regs, unsigned n) {
  const user_regs_struct& r = regs.raw();
  switch (n) {
    case 0: return r.rax;
    case 1: return r.rdx;
    case 2: return r.rcx;
    case 3: return r.rbx;
    case 4: return r.rsi;
    case 5: return r.rdi;
    case 6: return r.rbp;
    case 7: return r.rsp;
    case 8: return r.r8;
    case 9: return r.r9;
    case 10: return r.r10;
    case 11: return r.r11;
    case 12: return r.r12;
    case 13: return r.r13;
    case 14: return r.r14;
    case 15: return r.r15;
    default: return std::nullopt;
  }
}

}  // namespace

VdsoFrames::VdsoFrames(std::span<const uint8_t> image, uint64_t start)
    : image_(image.begin(), image.end()), start_(start), end_(start + image.size()) {
  try {
    init_libelf();
  } catch (const std::exception&) {
    return;
  }
  elf_.reset(elf_memory(image_.data(), image_.size()));
  if (!elf_ || elf_kind(elf_.get()) != ELF_K_ELF) return;
  // The link address of the image's first byte: that of the segment that
  // loads file offset 0.
  size_t n = 0;
  if (elf_getphdrnum(elf_.get(), &n) != 0) return;
  bool found = false;
  for (size_t i = 0; i < n && !found; i++) {
    GElf_Phdr ph;
    if (gelf_getphdr(elf_.get(), static_cast<int>(i), &ph) && ph.p_type == PT_LOAD && ph.p_offset == 0) {
      bias_ = start - ph.p_vaddr;
      found = true;
    }
  }
  if (found) cfi_ = dwarf_getcfi_elf(elf_.get());
}

VdsoFrames::~VdsoFrames() {
  if (cfi_) dwarf_cfi_end(cfi_);
}

std::optional<remote_addr> VdsoFrames::return_slot(const Registers& regs) const {
  const uint64_t ip = regs.ip().as_int();
  if (!cfi_ || ip < start_ || ip >= end_) return std::nullopt;
  Dwarf_Frame* raw = nullptr;
  if (dwarf_cfi_addrframe(cfi_, ip - bias_, &raw) != 0 || !raw) return std::nullopt;
  const std::unique_ptr<Dwarf_Frame, decltype(&std::free)> frame(raw, &std::free);
  bool signal_frame = false;
  const int ra = dwarf_frame_info(frame.get(), nullptr, nullptr, &signal_frame);
  if (ra < 0 || signal_frame) return std::nullopt;
  // The canonical frame address: a register plus an offset (libdw gives
  // it as DW_OP_bregx, or one of DW_OP_breg0-31).
  Dwarf_Op* ops = nullptr;
  size_t nops = 0;
  if (dwarf_frame_cfa(frame.get(), &ops, &nops) != 0 || nops != 1) return std::nullopt;
  std::optional<uint64_t> base;
  uint64_t offset = 0;  // signed, in two's complement
  if (ops[0].atom == DW_OP_bregx) {
    base = dwarf_register(regs, static_cast<unsigned>(ops[0].number));
    offset = ops[0].number2;
  } else if (ops[0].atom >= DW_OP_breg0 && ops[0].atom <= DW_OP_breg31) {
    base = dwarf_register(regs, ops[0].atom - DW_OP_breg0);
    offset = ops[0].number;
  }
  if (!base) return std::nullopt;
  const uint64_t cfa = *base + offset;
  // The return address: saved at the CFA plus an offset.
  Dwarf_Op mem[3];
  if (dwarf_frame_register(frame.get(), ra, mem, &ops, &nops) != 0 || !ops || nops == 0 ||
      ops[0].atom != DW_OP_call_frame_cfa)
    return std::nullopt;
  if (nops == 1) return remote_addr(cfa);
  if (nops == 2 && ops[1].atom == DW_OP_plus_uconst) return remote_addr(cfa + ops[1].number);
  return std::nullopt;
}

}  // namespace snap
