#include "parasite/sigframe.h"

#include <cstring>
#include <fmt/core.h>

#include "base/error.h"
#include "tracer/registers.h"

namespace snap::parasite {
namespace {

namespace L = sigframe_layout;

// Kernel ABI constants (arch/x86/include/uapi/asm/sigcontext.h, ucontext.h).
constexpr uint32_t kFpXstateMagic1 = 0x46505853;
constexpr uint32_t kFpXstateMagic2 = 0x46505845;
constexpr uint64_t kUcFpXstate = 0x1, kUcSigcontextSs = 0x2, kUcStrictRestoreSs = 0x4;
constexpr size_t kFxsaveSize = 512;
constexpr size_t kXsaveHeaderSize = 64;
constexpr size_t kSwReserved = 464;  // struct _fpx_sw_bytes inside the FXSAVE area

size_t fpstate_offset(remote_addr where) {
  uint64_t fp = (where.as_int() + L::kFixedSize + 63) & ~uint64_t{63};
  return fp - where.as_int();
}

template <typename T>
void put(std::vector<uint8_t>& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof(T));
}
template <typename T>
T get(std::span<const uint8_t> b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}

}  // namespace

size_t sigreturn_frame_size(remote_addr where, size_t xsave_len) {
  if (xsave_len == 0) return L::kFixedSize;
  return fpstate_offset(where) + xsave_len + (xsave_len > kFxsaveSize ? 4 : 0);
}

SigreturnFrame build_sigreturn_frame(const user_regs_struct& regs, std::span<const uint8_t> xsave,
                                     uint64_t sigmask, remote_addr where) {
  if (where.as_int() % 8)
    throw Error(fmt::format("sigreturn frame address {:#x} is not 8-byte aligned", where.as_int()));
  const bool have_fp = !xsave.empty();
  const bool have_xstate = xsave.size() > kFxsaveSize;
  if (have_fp && xsave.size() < kFxsaveSize)
    throw Error(fmt::format("xsave area of {} bytes is shorter than an FXSAVE area ({})", xsave.size(),
                            kFxsaveSize));
  if (have_xstate && xsave.size() < kFxsaveSize + kXsaveHeaderSize)
    throw Error(fmt::format("xsave area of {} bytes has no complete XSAVE header", xsave.size()));
  if (have_xstate && (get<uint64_t>(xsave, kFxsaveSize + 8) >> 63))
    throw Error("xsave area is in compacted format; rt_sigreturn needs the standard format",
                "pass the NT_X86_XSTATE regset as PTRACE_GETREGSET returned it");

  SigreturnFrame f;
  f.where = where;
  f.bytes.assign(sigreturn_frame_size(where, xsave.size()), 0);

  put<uint64_t>(f.bytes, L::kUcFlags,
                kUcSigcontextSs | kUcStrictRestoreSs | (have_xstate ? kUcFpXstate : 0));
  // uc_link = 0; uc_stack = {0, 0, 0}: left zero on purpose (see header).

  // rt_sigreturn sets orig_rax = -1, so the kernel's own restart logic will
  // not run afterwards: the call is re-issued with its original arguments
  // (rt_sigreturn also disarms current->restart_block; a restart_syscall
  // ends with EINTR: Registers::with_restart_applied).
  const user_regs_struct applied = Registers(regs).with_restart_applied().raw();
  const uint64_t rax = applied.rax, rip = applied.rip;
  const uint64_t gp[17] = {regs.r8,  regs.r9,  regs.r10, regs.r11, regs.r12, regs.r13,
                           regs.r14, regs.r15, regs.rdi, regs.rsi, regs.rbp, regs.rbx,
                           regs.rdx, rax,      regs.rcx, regs.rsp, rip};
  size_t sc = L::kSigcontext;
  for (size_t i = 0; i < 17; i++) put<uint64_t>(f.bytes, sc + 8 * i, gp[i]);
  put<uint64_t>(f.bytes, sc + 136, regs.eflags);
  put<uint16_t>(f.bytes, sc + 144, static_cast<uint16_t>(regs.cs));
  put<uint16_t>(f.bytes, sc + 146, 0);  // gs, fs: not restored on x86_64
  put<uint16_t>(f.bytes, sc + 148, 0);
  put<uint16_t>(f.bytes, sc + 150, static_cast<uint16_t>(regs.ss));
  // err, trapno, oldmask, cr2 stay zero.
  put<uint64_t>(f.bytes, L::kSigmask, sigmask);

  if (have_fp) {
    const size_t fo = fpstate_offset(where);
    put<uint64_t>(f.bytes, sc + L::kScFpstate, where.as_int() + fo);
    std::memcpy(f.bytes.data() + fo, xsave.data(), xsave.size());
    // struct _fpx_sw_bytes: magic1, extended_size, xfeatures, xstate_size.
    if (have_xstate) {
      uint64_t xfeatures;
      if (get<uint32_t>(xsave, kSwReserved) == kFpXstateMagic1) {
        xfeatures = get<uint64_t>(xsave, kSwReserved + 8);  // the kernel's, from ptrace
      } else {
        xfeatures = get<uint64_t>(xsave, kFxsaveSize) | 0x3;  // XSTATE_BV, plus x87/SSE
      }
      const auto size = static_cast<uint32_t>(xsave.size());
      put<uint32_t>(f.bytes, fo + kSwReserved, kFpXstateMagic1);
      put<uint32_t>(f.bytes, fo + kSwReserved + 4, size + 4);
      put<uint64_t>(f.bytes, fo + kSwReserved + 8, xfeatures);
      put<uint32_t>(f.bytes, fo + kSwReserved + 16, size);
      put<uint32_t>(f.bytes, fo + size, kFpXstateMagic2);
    } else {
      std::memset(f.bytes.data() + fo + kSwReserved, 0, kFxsaveSize - kSwReserved);
    }
  }
  return f;
}

}  // namespace snap::parasite
