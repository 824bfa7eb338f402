// The rt_sigreturn frame that lets the parasite put its thread back exactly
// as it found it, with no help from snap (see README.md, "Self-healing").
//
// Layout (x86_64, as the kernel's rt_sigreturn reads it; rsp = where + 8):
//   where + 0    pretcode (unused by rt_sigreturn; zero)
//   where + 8    struct ucontext: uc_flags, uc_link, uc_stack,
//                struct sigcontext (GP registers, fpstate pointer), uc_sigmask
//   where + 312  siginfo (128 bytes, unused)
//   where + N    XSAVE area, 64-byte aligned, FP_XSTATE_MAGIC2 after it
#pragma once

#include <sys/user.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/remote_ptr.h"

namespace snap::parasite {

// Offsets inside the frame, exported for tests and the curious.
namespace sigframe_layout {
constexpr size_t kUcontext = 8;                 // rsp points here for rt_sigreturn
constexpr size_t kUcFlags = kUcontext + 0;
constexpr size_t kUcStack = kUcontext + 16;     // stack_t, 24 bytes
constexpr size_t kSigcontext = kUcontext + 40;  // struct sigcontext, 256 bytes
constexpr size_t kSigmask = kUcontext + 296;    // 8 bytes
constexpr size_t kSiginfo = kUcontext + 304;    // 128 bytes
constexpr size_t kFixedSize = kSiginfo + 128;   // 440
// Inside struct sigcontext:
constexpr size_t kScRip = 16 * 8;
constexpr size_t kScRsp = 15 * 8;
constexpr size_t kScRax = 13 * 8;
constexpr size_t kScFpstate = 184;
}  // namespace sigframe_layout

struct SigreturnFrame {
  remote_addr where;           // where bytes must be written
  std::vector<uint8_t> bytes;  // the frame
  // The rsp to run rt_sigreturn with (the blob's snap_parasite_args.sigreturn_sp).
  remote_addr sigreturn_sp() const { return where + 8; }
};

// Bytes a frame needs for an XSAVE area of `xsave_len` bytes placed at
// `where` (alignment padding included).
size_t sigreturn_frame_size(remote_addr where, size_t xsave_len);

// Builds the frame to be written at `where` (8-byte aligned) in the target.
//  regs:   the thread's registers as PTRACE_GETREGS returned them. A thread
//          stopped in a restartable system call (rax = -ERESTARTSYS,
//          -ERESTARTNOINTR, -ERESTARTNOHAND or -ERESTART_RESTARTBLOCK with
//          orig_rax >= 0) is made to re-issue it: rax = orig_rax, rip -= 2.
//  xsave:  the NT_X86_XSTATE area (or a 512-byte FXSAVE area, or empty: the
//          FPU then comes back in its initial state). The software-reserved
//          bytes and FP_XSTATE_MAGIC2 are (re)written so the kernel accepts
//          it; XSAVE components absent from the header's XSTATE_BV come back
//          in their initial state, which is what XSTATE_BV says they were.
//  sigmask: the thread's blocked signals, restored by rt_sigreturn.
// fs/gs bases are not part of a signal frame; the parasite leaves them alone.
// The alternate signal stack is left alone too (uc_stack is a zero-size,
// flags-0 stack_t, which the kernel's restore_altstack ignores).
// Throws snap::Error for a misaligned `where` or an unusable xsave area.
SigreturnFrame build_sigreturn_frame(const user_regs_struct& regs, std::span<const uint8_t> xsave,
                                     uint64_t sigmask, remote_addr where);

}  // namespace snap::parasite
