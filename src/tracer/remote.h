// Reaching into a stopped process: its memory, and system calls it executes
// on snap's behalf.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "base/remote_ptr.h"
#include "tracer/registers.h"

namespace snap {

class Task;

// Copies between snap and another process. Uses process_vm_readv/writev and
// falls back to /proc/PID/mem (which also reaches pages without PROT_READ or
// PROT_WRITE). Throws SysError naming the pid and address.
void read_remote(pid_t pid, remote_addr src, void* dst, size_t n);
void write_remote(pid_t pid, remote_addr dst, const void* src, size_t n);

// Works out, in snap's own vDSO, the offsets find_syscall_site and
// find_syscall_ret_site look for (a disassembly, ~1 ms, done once): a dump
// calls it before it stops the job, so that the job does not wait for it.
void prepare_syscall_sites();
// The address of a `syscall` instruction in `pid`'s [vdso]. The kernel maps
// the same vDSO into every process, so snap finds the instruction in its own
// copy with Capstone and checks the bytes at the same offset in the target.
// A process without a vDSO (it unmapped it): one in its file-backed code.
remote_addr find_syscall_site(pid_t pid);
// A `syscall` instruction in pid's file-backed code (for a process that
// unmapped its vDSO); nullopt when there is none.
std::optional<remote_addr> find_code_syscall_site(pid_t pid);
// Same, for a vDSO known to start at `vdso_base` in `pid`.
remote_addr find_syscall_site(pid_t pid, remote_addr vdso_base);
// A `syscall` instruction of `pid`'s [vdso] that is followed only by
// register-clearing instructions (xor r,r / nop) and a plain `ret`. A thread
// that executes a system call there with rsp = P continues at the address
// stored at P, with rsp = P + 8: the parasite uses this to make injected
// calls end in rt_sigreturn if snap dies (src/parasite/README.md).
// nullopt when this kernel's vDSO has no such instruction.
std::optional<remote_addr> find_syscall_ret_site(pid_t pid);

// An RAII scope in which a stopped thread executes system calls for snap,
// in the spirit of rr's AutoRemoteSyscalls. No code is written into the
// target: the thread is pointed at an existing `syscall` instruction.
// On scope exit the thread gets its registers back, with an interrupted
// restartable system call made explicit (see Registers::with_restart_applied).
class RemoteSyscalls {
 public:
  RemoteSyscalls(Task& task, remote_addr syscall_site);
  ~RemoteSyscalls();
  RemoteSyscalls(const RemoteSyscalls&) = delete;
  RemoteSyscalls& operator=(const RemoteSyscalls&) = delete;

  // Executes syscall `nr`; returns the raw result (-errno on failure).
  long syscall(long nr, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0, uint64_t a4 = 0,
               uint64_t a5 = 0, uint64_t a6 = 0);
  // Same, throwing SysError("what (pid N)") on failure.
  long checked(const std::string& what, long nr, uint64_t a1 = 0, uint64_t a2 = 0,
               uint64_t a3 = 0, uint64_t a4 = 0, uint64_t a5 = 0, uint64_t a6 = 0);

  // The message of the last ptrace event (e.g. PTRACE_EVENT_CLONE: the new
  // pid) seen during the last syscall(), or -1.
  long last_event_message(int event) const { return event == last_event_ ? last_event_msg_ : -1; }

  // The syscall site moved (restore moves the vDSO).
  void set_syscall_site(remote_addr site) { site_ = site; }
  remote_addr syscall_site() const { return site_; }
  // Registers to put back on scope exit (default: those at entry).
  void set_final_regs(const Registers& r) { final_ = r; }
  // Stack pointer the thread has while it executes the calls (default: that
  // of the final registers).
  void set_syscall_sp(remote_addr sp) { call_sp_ = sp; }
  Task& task() { return task_; }

 private:
  Task& task_;
  remote_addr site_;
  Registers final_;
  int last_event_ = 0;
  long last_event_msg_ = -1;
  std::optional<remote_addr> call_sp_;
};

}  // namespace snap
