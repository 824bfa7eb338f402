#include "tracer/registers.h"

#include <sys/syscall.h>

#include <cerrno>

#include "base/error.h"

namespace snap {

namespace {
// Kernel-internal restart codes (include/linux/errno.h), seen by tracers.
constexpr int64_t kERestartSys = 512, kERestartNoIntr = 513, kERestartNoHand = 514,
                  kERestartRestartBlock = 516;
constexpr uint64_t kSyscallInsnLen = 2;  // 0f 05
}  // namespace

Registers Registers::from_bytes(std::span<const uint8_t> b) {
  if (b.size() != sizeof(user_regs_struct))
    throw Error("saved registers have " + std::to_string(b.size()) + " bytes, expected " +
                std::to_string(sizeof(user_regs_struct)));
  user_regs_struct r;
  std::memcpy(&r, b.data(), sizeof r);
  return Registers(r);
}

std::vector<uint8_t> Registers::to_bytes() const {
  auto p = reinterpret_cast<const uint8_t*>(&r_);
  return {p, p + sizeof r_};
}

void Registers::set_syscall(int64_t nr, const uint64_t (&a)[6]) {
  r_.rax = static_cast<uint64_t>(nr);
  r_.orig_rax = static_cast<uint64_t>(-1);
  r_.rdi = a[0];
  r_.rsi = a[1];
  r_.rdx = a[2];
  r_.r10 = a[3];
  r_.r8 = a[4];
  r_.r9 = a[5];
}

bool Registers::in_restartable_syscall() const {
  if (original_syscallno() < 0) return false;
  int64_t rc = -syscall_result();
  return rc == kERestartSys || rc == kERestartNoIntr || rc == kERestartNoHand ||
         rc == kERestartRestartBlock;
}

Registers Registers::with_restart_applied() const {
  Registers r = *this;
  if (!in_restartable_syscall()) return r;
  r.r_.orig_rax = static_cast<uint64_t>(-1);
  if (r_.orig_rax == SYS_restart_syscall) {
    // The kernel's own restart of a call stopped earlier (a futex wait,
    // nanosleep or poll with a timeout, resumed after a SIGSTOP, a ptrace
    // stop): what it resumes lives in the thread's restart_block, which
    // whatever the thread runs before it resumes may replace (the
    // parasite's poll does: the restart then polled the parasite's fd and
    // the job's futex "returned" 1, or EFAULT), and no register tells which
    // call it was. It ends as when a signal handler runs during such a
    // call: with EINTR (nanosleep has written the time left already).
    r.r_.rax = static_cast<uint64_t>(-static_cast<int64_t>(EINTR));
    return r;
  }
  r.r_.rax = r_.orig_rax;
  r.r_.rip -= kSyscallInsnLen;
  return r;
}

}  // namespace snap
