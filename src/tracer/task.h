// Threads held with ptrace. A Task is one seized thread: it is stopped while
// snap works on it and detached (running again) when the Task goes away, on
// every path, so a failed dump leaves the job running as before.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <array>
#include <map>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/remote_ptr.h"
#include "tracer/registers.h"

namespace snap {

class Task {
 public:
  // PTRACE_SEIZE + PTRACE_INTERRUPT, then waits for the stop.
  // Throws Error explaining EPERM/ESRCH in user terms.
  static std::unique_ptr<Task> seize_and_stop(pid_t tid);
  // The same for several threads at once: all are seized (which does not
  // stop them), then all interrupted, then each stop collected, so they stop
  // together instead of one after another. What could not be stopped is in
  // `failed`, each with the error seize_and_stop would have thrown.
  // `tgid`, where all are threads of that process, spares the threads but
  // its leader a system call each (see wait_stop_leaving_exit).
  struct Stopped {
    std::vector<std::unique_ptr<Task>> tasks;  // in the order of the tids
    std::vector<std::pair<pid_t, std::exception_ptr>> failed;
  };
  static Stopped seize_and_stop_all(const std::vector<pid_t>& tids, pid_t tgid = 0);
  ~Task();  // detaches (re-delivering a signal that the stop intercepted)
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;

  pid_t tid() const { return tid_; }

  Registers regs() const;
  void set_regs(const Registers& r);
  std::vector<uint8_t> xsave() const;  // NT_X86_XSTATE, the kernel's length
  void set_xsave(std::span<const uint8_t> area);
  uint64_t signal_mask() const;
  void set_signal_mask(uint64_t mask);
  // Queued signals: the thread's own (shared=false) or its process's.
  std::vector<std::vector<uint8_t>> pending_signals(bool shared) const;
  // The registered rseq area (address, length, signature), if any.
  std::optional<std::array<uint64_t, 3>> rseq_configuration() const;
  // A signal whose delivery the seize intercepted; it goes back on detach.
  // Its siginfo (128 bytes), to save in the image; empty if none.
  const std::vector<uint8_t>& intercepted_siginfo() const { return stop_siginfo_; }
  std::optional<int> intercepted_signal() const { return stop_signal_; }
  // The signal of the job-control stop (SIGSTOP, SIGTSTP, ...) the thread
  // was in when seized, if it was: it stays stopped after detach.
  std::optional<int> job_control_stop() const { return group_stop_; }

  // The registers, XSAVE area and signal mask as read at this stop, kept by
  // whoever read them (the dump's collect) for the next one who needs them
  // (the parasite's guard of the thread) to take instead of reading them
  // again: ~3 system calls a thread while the job is stopped. Dropped when
  // the thread is resumed or detached, or any of them is set.
  struct StopState {
    Registers regs;
    std::vector<uint8_t> xsave;
    uint64_t mask = 0;
  };
  void keep_stop_state(StopState s) { stop_state_ = std::move(s); }
  std::optional<StopState> take_stop_state() { return std::exchange(stop_state_, std::nullopt); }

  // Resumes with PTRACE_SYSCALL/PTRACE_CONT and waits for the next stop.
  // Returns the wait status. Signal-delivery stops of other signals are
  // remembered (and passed on at detach) and waited through. A fault the
  // kernel raised (SIGSEGV, SIGBUS, SIGILL, SIGFPE in code snap made the
  // thread run) throws Error with the address instead.
  int resume_and_wait(int request);
  // PTRACE_SYSCALL/PTRACE_CONT without the wait, for a caller that waits
  // itself (the parasite's threads, running free); throws SysError naming
  // the request, the thread and `doing`.
  void resume(int request, const char* doing);
  // A signal-delivery stop of `sig` seen by such a caller: the signal is
  // held back until detach, as resume_and_wait() holds it (a SIGSTOP of
  // Slurm's suspend arriving while the parasite runs stops the job then).
  void hold_signal(int sig) { intercept(sig); }

  // PTRACE_SETOPTIONS: `options`, plus PTRACE_O_SUSPEND_SECCOMP once
  // suspend_seccomp() was called (tracer/seccomp.h). Throws SysError.
  void set_options(long options);
  // From now on the thread's seccomp lets the calls snap makes it run
  // through, until detach (CAP_SYS_ADMIN): it set up seccomp itself. Its
  // options become PTRACE_O_TRACESYSGOOD, the seize's.
  void suspend_seccomp();
  bool seccomp_suspended() const { return suspend_seccomp_; }

  // Leaves the thread to the kernel: detaches now, optionally delivering sig.
  void detach(int sig = 0);
  // Forgets the thread without touching it (it was killed or exited).
  void abandon() { detached_ = true; }
  // Detached or abandoned: snap no longer holds it.
  bool let_go() const { return detached_; }

  // For a thread snap created itself (restore): takes over an already
  // ptrace-stopped child traced via PTRACE_TRACEME / seize.
  static std::unique_ptr<Task> adopt_stopped(pid_t tid);

 private:
  explicit Task(pid_t tid) : tid_(tid) {}
  // After PTRACE_INTERRUPT: waits for the thread's stop and notes what it
  // was (a job-control stop, an intercepted signal). False if it exited.
  // `leader`: whether it may lead its thread group (wait_stop_leaving_exit).
  bool await_interrupt_stop(bool leader);
  // Takes note of a signal-delivery stop: the signal goes back at detach.
  void intercept(int sig);
  pid_t tid_;
  bool detached_ = false;
  std::optional<int> stop_signal_;
  std::optional<int> group_stop_;
  std::vector<uint8_t> stop_siginfo_;
  std::optional<StopState> stop_state_;
  // Resumed since the intercepted stop: the signal cannot ride on the
  // detach any more and is queued again instead.
  bool resumed_ = false;
  bool suspend_seccomp_ = false;
};

// Every thread of a process and of all its descendants, stopped.
class SeizedTree {
 public:
  // Stops `root` and all its descendants, rescanning /proc until no new
  // thread or child appears. Refuses snap itself and its ancestors, a zombie
  // root, kernel threads and processes traced by someone else, with a
  // message. Zombie children are listed in zombies() (they cannot be
  // stopped), except those with exit signal 0: nobody is told of their end,
  // and they are snap's own copy-on-write snapshots (parasite/snapshot.h)
  // that a killed dump left behind, never part of the job.
  static SeizedTree seize(pid_t root);

  // Processes in discovery order (root first); each with its tasks, leader first.
  struct Proc {
    pid_t pid;
    std::vector<std::unique_ptr<Task>> tasks;
    // Zombie children with exit signal 0: snapshots a killed dump left
    // (parasite/snapshot.h), found while the children were listed.
    std::vector<pid_t> left_snapshots;
  };
  std::vector<Proc>& processes() { return procs_; }
  const std::vector<Proc>& processes() const { return procs_; }
  size_t thread_count() const;
  // Children of processes in the tree that had exited and were not reaped
  // yet, in discovery order: only their /proc/PID/stat is left to record.
  const std::vector<pid_t>& zombies() const { return zombies_; }

  // Kills every process (SIGKILL), for `snap dump --kill`.
  void kill_all();

 private:
  std::vector<Proc> procs_;
  std::vector<pid_t> zombies_;
};

// Why PTRACE_SEIZE fails with EPERM under Yama ptrace_scope `scope`
// (/proc/sys/kernel/yama/ptrace_scope) for a process that is not snap's
// descendant; empty for scope 0 (Yama refuses nothing there).
std::string yama_eperm_hint(int scope);

// Checks that `pid` can be dumped at all (exists, not snap or an ancestor,
// not a zombie or kernel thread, not traced by another tracer). Throws Error.
void check_dumpable(pid_t pid);

// Waits for the next ptrace stop of traced task `tid` and returns its wait
// status, taken. If the task exits instead, returns nullopt and leaves the
// exit to be collected by its parent: that may be snap itself (`snap run`
// waits for its job), which must still learn how the job ended. That takes
// a look first (waitid with WNOWAIT); a thread known not to lead its group
// (`leader` false) is never anyone's child to wait for, and is waited for
// at once: one system call less, which counts in a freeze of many threads.
std::optional<int> wait_stop_leaving_exit(pid_t tid, bool leader = true);

}  // namespace snap
