// x86-64 general registers of a stopped thread, as the kernel's
// struct user_regs_struct (NT_PRSTATUS), with named accessors.
#pragma once

#include <sys/user.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "base/remote_ptr.h"

namespace snap {

class Registers {
 public:
  Registers() { std::memset(&r_, 0, sizeof r_); }
  explicit Registers(const user_regs_struct& r) : r_(r) {}
  static Registers from_bytes(std::span<const uint8_t> b);
  std::vector<uint8_t> to_bytes() const;

  remote_addr ip() const { return remote_addr(r_.rip); }
  void set_ip(remote_addr a) { r_.rip = a.as_int(); }
  remote_addr sp() const { return remote_addr(r_.rsp); }
  void set_sp(remote_addr a) { r_.rsp = a.as_int(); }
  int64_t syscall_result() const { return static_cast<int64_t>(r_.rax); }
  int64_t original_syscallno() const { return static_cast<int64_t>(r_.orig_rax); }
  uint64_t fs_base() const { return r_.fs_base; }

  // Sets the registers for executing system call `nr` at a `syscall`
  // instruction, with orig_rax = -1 so the kernel applies no restart logic.
  void set_syscall(int64_t nr, const uint64_t (&args)[6]);

  // True when the thread sits at the end of a system call the kernel would
  // restart (rax = -ERESTARTSYS/-ERESTARTNOINTR/-ERESTARTNOHAND/
  // -ERESTART_RESTARTBLOCK with a valid orig_rax).
  bool in_restartable_syscall() const;
  // The same context with the restart made explicit: rip back on the
  // `syscall` instruction and rax = the syscall number, orig_rax = -1.
  // Resuming these registers from any stop re-issues the call with its
  // original arguments, independent of kernel-internal restart state. A
  // restart_syscall (the kernel's resumption of an earlier interrupted
  // call, whose state only the kernel holds) ends with -EINTR instead, as
  // if a signal handler had run.
  Registers with_restart_applied() const;

  user_regs_struct& raw() { return r_; }
  const user_regs_struct& raw() const { return r_; }

 private:
  user_regs_struct r_;
};

}  // namespace snap
