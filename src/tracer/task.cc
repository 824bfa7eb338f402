#include "tracer/task.h"

#include <elf.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <atomic>
#include <cstring>
#include <optional>
#include <set>
#include <string>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "tracer/proc.h"

namespace snap {

namespace {

std::string who(pid_t tid) { return "pid " + std::to_string(tid); }

long ptrace_or_throw(enum __ptrace_request req, pid_t tid, void* addr, void* data,
                     const char* name) {
  long rc = ::ptrace(req, tid, addr, data);
  if (rc < 0) throw SysError(std::string("ptrace(") + name + ", " + who(tid) + ")", errno);
  return rc;
}

}  // namespace

std::string yama_eperm_hint(int scope) {
  switch (scope) {
    case 1:
      return "Yama ptrace_scope is 1 (/proc/sys/kernel/yama/ptrace_scope): a process may only be "
             "traced by its ancestors, and this one was not started by snap; start the job with "
             "'snap run' (snap stays its parent and can checkpoint it), or ask for CAP_SYS_PTRACE";
    case 2:
      return "Yama ptrace_scope is 2 (/proc/sys/kernel/yama/ptrace_scope): only processes with "
             "CAP_SYS_PTRACE may attach, even to their own children; run snap as root or with "
             "CAP_SYS_PTRACE";
    case 3:
      return "Yama ptrace_scope is 3 (/proc/sys/kernel/yama/ptrace_scope): ptrace attach is "
             "disabled on this machine until reboot; no process can be checkpointed";
    default:
      return {};
  }
}

namespace {

// Why attaching to `pid` was refused, in terms the user can act on.
std::string eperm_hint(pid_t pid) {
  auto status = proc::try_read_file("/proc/" + std::to_string(pid) + "/status");
  if (status) {
    auto st = proc::parse_status(*status);
    if (st.tracer_pid != 0)
      return "it is already traced by pid " + std::to_string(st.tracer_pid) +
             " (a debugger or strace?); detach that first";
    if (st.uids[0] != ::getuid() && ::geteuid() != 0)
      return "it belongs to uid " + std::to_string(st.uids[0]) +
             "; only its owner (or root) can checkpoint it";
  }
  if (auto yama = proc::try_read_file("/proc/sys/kernel/yama/ptrace_scope"); yama && !yama->empty())
    if (auto hint = yama_eperm_hint(std::atoi(yama->c_str())); !hint.empty()) return hint;
  return "the process may be setuid or non-dumpable, or you lack CAP_SYS_PTRACE";
}

}  // namespace

namespace {

// Puts back a signal that a ptrace stop took from thread `tid`, with its
// original siginfo where the kernel lets another process send that (signals
// from the kernel or a timer), else as a plain tgkill.
void requeue_signal(pid_t tid, int sig, const std::vector<uint8_t>& info) {
  auto status = proc::try_read_file("/proc/" + std::to_string(tid) + "/status");
  pid_t tgid = status ? proc::parse_status(*status).tgid : tid;
  siginfo_t si;
  std::memset(&si, 0, sizeof si);
  std::memcpy(&si, info.data(), std::min(info.size(), sizeof si));
  if (::syscall(SYS_rt_tgsigqueueinfo, tgid, tid, sig, &si) == 0) return;
  if (::syscall(SYS_tgkill, tgid, tid, sig) != 0)
    warn("could not give signal {} back to pid {}: {}", sig, tid, std::strerror(errno));
}

}  // namespace

std::optional<int> wait_stop_leaving_exit(pid_t tid, bool leader) {
  for (;;) {
    // A look first, taking nothing: an exit stays for whoever collects it
    // (a thread but the leader is nobody's child: no look).
    siginfo_t info{};
    if (leader &&
        ::waitid(P_PID, static_cast<id_t>(tid), &info, WEXITED | WSTOPPED | __WALL | WNOWAIT) < 0) {
      if (errno == EINTR) continue;
      throw SysError("waitid(" + who(tid) + ")", errno);
    }
    if (info.si_code == CLD_EXITED || info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED) {
      // snap's own child (snap run's job): its parent's wait collects it.
      // Anything else is taken here, as a tracer must: that hands the
      // zombie to its real parent (and lets a thread's group be reaped).
      auto st = proc::try_read_file("/proc/" + std::to_string(tid) + "/status");
      if (st) {
        auto s = proc::parse_status(*st);
        if (s.tgid == tid && s.ppid == ::getpid()) return std::nullopt;
      }
      int ignored;
      while (::waitpid(tid, &ignored, __WALL) < 0 && errno == EINTR) {}
      return std::nullopt;
    }
    int status = 0;
    pid_t r = ::waitpid(tid, &status, __WALL);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw SysError("waitpid(" + who(tid) + ")", errno);
    }
    // Exited (a thread without the look), or killed between the look and
    // the wait (SIGKILL only: it was stopped): its status is gone, as it
    // would have been before.
    if (WIFEXITED(status) || WIFSIGNALED(status)) return std::nullopt;
    return status;
  }
}

namespace {

SysError seize_error(pid_t tid, int err) {
  if (err == EPERM) return SysError("cannot attach to " + who(tid), err, eperm_hint(tid));
  return SysError("ptrace(PTRACE_SEIZE, " + who(tid) + ")", err);
}

}  // namespace

std::unique_ptr<Task> Task::seize_and_stop(pid_t tid) {
  Stopped s = seize_and_stop_all({tid});
  if (!s.failed.empty()) std::rethrow_exception(s.failed.front().second);
  return std::move(s.tasks.front());
}

Task::Stopped Task::seize_and_stop_all(const std::vector<pid_t>& tids, pid_t tgid) {
  Stopped out;
  // Seized, not stopped yet: such a thread cannot be detached before its
  // stop (PTRACE_DETACH wants a stopped tracee), so every one seized is
  // interrupted and waited for below, whatever else fails.
  std::vector<std::unique_ptr<Task>> seized;
  for (pid_t tid : tids) {
    if (::ptrace(PTRACE_SEIZE, tid, nullptr, reinterpret_cast<void*>(PTRACE_O_TRACESYSGOOD)) < 0)
      out.failed.emplace_back(tid, std::make_exception_ptr(seize_error(tid, errno)));
    else
      seized.push_back(std::unique_ptr<Task>(new Task(tid)));
  }
  std::vector<bool> interrupted(seized.size(), false);
  for (size_t i = 0; i < seized.size(); i++) {
    if (::ptrace(PTRACE_INTERRUPT, seized[i]->tid(), nullptr, nullptr) == 0) {
      interrupted[i] = true;
      continue;
    }
    // Gone meanwhile (its exit undoes the seize).
    int err = errno;
    seized[i]->abandon();
    out.failed.emplace_back(seized[i]->tid(), std::make_exception_ptr(SysError(
        "ptrace(PTRACE_INTERRUPT, " + who(seized[i]->tid()) + ")", err)));
  }
  for (size_t i = 0; i < seized.size(); i++) {
    if (!interrupted[i]) continue;
    std::unique_ptr<Task>& t = seized[i];
    try {
      if (t->await_interrupt_stop(tgid == 0 || t->tid() == tgid)) {
        out.tasks.push_back(std::move(t));
        continue;
      }
      t->abandon();
      throw Error(who(t->tid()) + " exited while being stopped");
    } catch (...) {
      out.failed.emplace_back(t->tid(), std::current_exception());
    }
  }
  return out;
}

bool Task::await_interrupt_stop(bool leader) {
  for (;;) {
    auto stop = wait_stop_leaving_exit(tid_, leader);
    if (!stop) return false;
    int status = *stop;
    if (!WIFSTOPPED(status)) continue;
    int event = status >> 16;
    int sig = WSTOPSIG(status);
    if (event == PTRACE_EVENT_STOP) {  // the interrupt, or a group stop
      // A thread already in a job-control stop reports it with its stop
      // signal; the interrupt of a running one with SIGTRAP.
      if (sig != SIGTRAP) group_stop_ = sig;
      return true;
    }
    // A signal was about to be delivered: hold it back until detach, and
    // stay stopped here (this is a stop as good as any).
    intercept(sig);
    return true;
  }
}

void Task::set_options(long options) {
  if (suspend_seccomp_) options |= PTRACE_O_SUSPEND_SECCOMP;
  if (::ptrace(PTRACE_SETOPTIONS, tid_, nullptr, reinterpret_cast<void*>(options)) == 0) return;
  const int err = errno;
  throw SysError(fmt::format("ptrace(PTRACE_SETOPTIONS) on {}", who(tid_)), err,
                 suspend_seccomp_ && err == EPERM
                     ? "letting snap's calls through the job's seccomp needs CAP_SYS_ADMIN "
                       "and snap under no seccomp of its own"
                     : "");
}

void Task::suspend_seccomp() {
  suspend_seccomp_ = true;
  set_options(PTRACE_O_TRACESYSGOOD);
}

std::unique_ptr<Task> Task::adopt_stopped(pid_t tid) { return std::unique_ptr<Task>(new Task(tid)); }

Task::~Task() {
  if (!detached_) detach(0);
}

void Task::intercept(int sig) {
  auto is_stop = [](int s) { return s == SIGSTOP || s == SIGTSTP || s == SIGTTIN || s == SIGTTOU; };
  // Stop signals cannot be blocked, so one queued again would come straight
  // back here while snap works on the thread. They need not be: a process
  // in a job-control stop ignores more of them (the SIGCONT that ends the
  // stop discards them), and several coalesce into one stop. So at most one
  // is held (for detach), and a stopped process's are dropped.
  if (is_stop(sig) && (group_stop_ || (stop_signal_ && is_stop(*stop_signal_)))) return;
  if (stop_signal_) requeue_signal(tid_, *stop_signal_, stop_siginfo_);  // an earlier one
  stop_signal_ = sig;
  siginfo_t si;
  std::memset(&si, 0, sizeof si);
  if (::ptrace(PTRACE_GETSIGINFO, tid_, nullptr, &si) < 0) {
    si.si_signo = sig;
    si.si_code = SI_KERNEL;
  }
  auto p = reinterpret_cast<const uint8_t*>(&si);
  stop_siginfo_.assign(p, p + sizeof si);
  resumed_ = false;
}

void Task::detach(int sig) {
  if (detached_) return;
  detached_ = true;
  stop_state_.reset();
  if (stop_signal_ && resumed_) {
    // No longer in that signal-delivery stop: queue the signal again.
    requeue_signal(tid_, *stop_signal_, stop_siginfo_);
    stop_signal_.reset();
  }
  int deliver = sig ? sig : stop_signal_.value_or(0);
  if (::ptrace(PTRACE_DETACH, tid_, nullptr, reinterpret_cast<void*>(static_cast<long>(deliver))) < 0 &&
      errno != ESRCH)
    warn("could not detach from pid {}: {}", tid_, std::strerror(errno));
}

Registers Task::regs() const {
  user_regs_struct r;
  iovec iov{&r, sizeof r};
  ptrace_or_throw(PTRACE_GETREGSET, tid_, reinterpret_cast<void*>(NT_PRSTATUS), &iov,
                  "PTRACE_GETREGSET NT_PRSTATUS");
  return Registers(r);
}

void Task::set_regs(const Registers& regs) {
  stop_state_.reset();
  user_regs_struct r = regs.raw();
  iovec iov{&r, sizeof r};
  ptrace_or_throw(PTRACE_SETREGSET, tid_, reinterpret_cast<void*>(NT_PRSTATUS), &iov,
                  "PTRACE_SETREGSET NT_PRSTATUS");
}

std::vector<uint8_t> Task::xsave() const {
  // The kernel allocates, zeroes and copies as many bytes as asked: ask for
  // the size the first call reported (the CPU's XSAVE area, the same for
  // every thread), and for more only if a call fills all it was given.
  static std::atomic<size_t> known{0};
  size_t size = known.load(std::memory_order_relaxed);
  for (size = size ? size + 64 : 16384;; size *= 2) {
    std::vector<uint8_t> area(size);
    iovec iov{area.data(), area.size()};
    ptrace_or_throw(PTRACE_GETREGSET, tid_, reinterpret_cast<void*>(NT_X86_XSTATE), &iov,
                    "PTRACE_GETREGSET NT_X86_XSTATE");
    if (iov.iov_len < size) {
      area.resize(iov.iov_len);
      known.store(iov.iov_len, std::memory_order_relaxed);
      return area;
    }
  }
}

void Task::set_xsave(std::span<const uint8_t> area) {
  stop_state_.reset();
  // PTRACE_SETREGSET only reads the buffer; iovec merely lacks a const.
  iovec iov{const_cast<uint8_t*>(area.data()), area.size()};
  ptrace_or_throw(PTRACE_SETREGSET, tid_, reinterpret_cast<void*>(NT_X86_XSTATE), &iov,
                  "PTRACE_SETREGSET NT_X86_XSTATE");
}

uint64_t Task::signal_mask() const {
  uint64_t mask = 0;
  ptrace_or_throw(PTRACE_GETSIGMASK, tid_, reinterpret_cast<void*>(sizeof mask), &mask,
                  "PTRACE_GETSIGMASK");
  return mask;
}

void Task::set_signal_mask(uint64_t mask) {
  stop_state_.reset();
  ptrace_or_throw(PTRACE_SETSIGMASK, tid_, reinterpret_cast<void*>(sizeof mask), &mask,
                  "PTRACE_SETSIGMASK");
}

std::vector<std::vector<uint8_t>> Task::pending_signals(bool shared) const {
  std::vector<std::vector<uint8_t>> out;
  for (uint32_t off = 0;; off += 32) {
    __ptrace_peeksiginfo_args args{off, shared ? static_cast<uint32_t>(PTRACE_PEEKSIGINFO_SHARED) : 0u, 32};
    siginfo_t buf[32];
    long n = ptrace_or_throw(PTRACE_PEEKSIGINFO, tid_, &args, buf, "PTRACE_PEEKSIGINFO");
    for (long i = 0; i < n; i++) {
      auto p = reinterpret_cast<const uint8_t*>(&buf[i]);
      out.emplace_back(p, p + sizeof(siginfo_t));
    }
    if (n < 32) break;
  }
  return out;
}

std::optional<std::array<uint64_t, 3>> Task::rseq_configuration() const {
  struct {
    uint64_t rseq_abi_pointer;
    uint32_t rseq_abi_size, signature, flags, pad;
  } conf{};
  constexpr auto kGetRseqConfiguration = static_cast<enum __ptrace_request>(0x420f);
  if (::ptrace(kGetRseqConfiguration, tid_, reinterpret_cast<void*>(sizeof conf), &conf) < 0)
    return std::nullopt;  // kernel without rseq
  if (!conf.rseq_abi_pointer) return std::nullopt;
  return std::array<uint64_t, 3>{conf.rseq_abi_pointer, conf.rseq_abi_size, conf.signature};
}

void Task::resume(int request, const char* doing) {
  stop_state_.reset();
  resumed_ = true;
  if (::ptrace(static_cast<enum __ptrace_request>(request), tid_, nullptr, nullptr) < 0)
    throw SysError(fmt::format("ptrace({}, {}) {}",
                               request == PTRACE_SYSCALL ? "PTRACE_SYSCALL" : "PTRACE_CONT",
                               who(tid_), doing),
                   errno);
}

int Task::resume_and_wait(int request) {
  for (;;) {
    resume(request, "while snap works on it");
    int status = 0;
    pid_t r;
    do r = ::waitpid(tid_, &status, __WALL);
    while (r < 0 && errno == EINTR);
    if (r < 0) throw SysError("waitpid(" + who(tid_) + ")", errno);
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
      detached_ = true;
      throw Error(who(tid_) +
                  (WIFEXITED(status) ? " exited with status " + std::to_string(WEXITSTATUS(status))
                                     : " was killed by signal " + std::to_string(WTERMSIG(status))) +
                  " while snap was working on it");
    }
    int sig = WSTOPSIG(status);
    if (sig == (SIGTRAP | 0x80) || sig == SIGTRAP || (status >> 16) != 0) return status;
    // A fault of the code snap made the thread run: resuming would only
    // fault again.
    if (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE) {
      siginfo_t si{};
      if (::ptrace(PTRACE_GETSIGINFO, tid_, nullptr, &si) == 0 && si.si_code > 0)
        throw Error(fmt::format("{} faulted ({}, address {:#x}) at {:#x} while running code for snap",
                                who(tid_), strsignal(sig), reinterpret_cast<uint64_t>(si.si_addr),
                                regs().ip().as_int()));
    }
    // Another signal arrived for the thread: hold it back until detach.
    intercept(sig);
  }
}

void check_dumpable(pid_t pid) {
  if (pid <= 0) throw Error("invalid pid " + std::to_string(pid));
  auto stat_text = proc::try_read_file("/proc/" + std::to_string(pid) + "/stat");
  if (!stat_text)
    throw Error("no process with pid " + std::to_string(pid),
                "check the pid with 'ps' (the job may have ended)");
  auto st = proc::parse_stat(*stat_text);
  if (st.flags & 0x00200000)  // PF_KTHREAD
    throw Error("pid " + std::to_string(pid) + " (" + st.comm + ") is a kernel thread",
                "only user processes can be checkpointed");
  if (st.state == 'Z' || st.state == 'X')
    throw Error("pid " + std::to_string(pid) + " (" + st.comm + ") is a zombie: it has exited",
                "its parent has not collected it yet; there is nothing left to checkpoint");
  // snap itself and its ancestors cannot be stopped by snap.
  for (pid_t p = ::getpid(); p > 0;) {
    if (p == pid)
      throw Error("pid " + std::to_string(pid) + " is snap itself or one of its ancestors",
                  "checkpoint a job from outside it (another shell, 'snap watch', or 'snap run')");
    auto s = proc::try_read_file("/proc/" + std::to_string(p) + "/stat");
    if (!s) break;
    pid_t parent = proc::parse_stat(*s).ppid;
    if (parent == p) break;
    p = parent;
  }
  auto status = proc::read_status(pid);
  if (status.tracer_pid != 0)
    throw Error("pid " + std::to_string(pid) + " is already traced by pid " +
                    std::to_string(status.tracer_pid),
                "a debugger or strace holds it; detach that first");
}

namespace {

enum class ChildKind { kLive, kJobZombie, kSnapshotLeft, kGone };

// A child that has exited is a zombie until its parent reaps it. One with
// exit signal 0 is one of snap's snapshots (see parasite/snapshot.h), left
// by a dump that was killed: the job never sees it, so it is not recorded.
ChildKind classify_child(pid_t pid) {
  auto text = proc::try_read_file("/proc/" + std::to_string(pid) + "/stat");
  if (!text) return ChildKind::kGone;  // reaped meanwhile
  auto st = proc::parse_stat(*text);
  if (st.state != 'Z' && st.state != 'X') return ChildKind::kLive;
  // A leader that ended before its other threads shows 'Z' too, but its
  // process is alive.
  try {
    if (proc::list_threads(pid).size() > 1) return ChildKind::kLive;
  } catch (const SysError&) {
    return ChildKind::kGone;
  }
  return st.exit_signal == 0 ? ChildKind::kSnapshotLeft : ChildKind::kJobZombie;
}

constexpr int kKcmpVm = 1;  // KCMP_VM

// A thread of `pid` (one of `tids`) in vfork() (or posix_spawn's clone
// with CLONE_VFORK) and the child it waits for: one that shares its address
// space. Such a thread sleeps uninterruptibly ('D') until that child runs a
// program or exits, and no ptrace stop reaches it meanwhile. Only a 'D'
// thread is asked (one read of its stat otherwise).
struct VforkWait {
  pid_t tid = 0, child = 0;
};
std::optional<VforkWait> vfork_child(pid_t pid, const std::vector<pid_t>& tids) {
  for (pid_t tid : tids) {
    // The state alone: a thread's stat is no process's (exit signal -1).
    auto text = proc::try_read_file(fmt::format("/proc/{}/task/{}/stat", pid, tid));
    const size_t close = text ? text->rfind(')') : std::string::npos;
    if (close == std::string::npos || close + 2 >= text->size() || (*text)[close + 2] != 'D')
      continue;
    for (pid_t c : proc::list_children(pid, {tid}))
      if (::syscall(SYS_kcmp, pid, c, kKcmpVm, 0, 0) == 0) return VforkWait{tid, c};
  }
  return std::nullopt;
}

// A process one of whose threads is in vfork() is stopped once the child has
// run its program, normally at once; one whose child does not within a few
// seconds is refused rather than waited for (the rest of the job would stay
// stopped, or snap would wait for that thread's stop for ever).
void await_vfork_done(pid_t pid, const std::vector<pid_t>& tids) {
  constexpr auto kPatience = std::chrono::seconds(3);
  auto wait = vfork_child(pid, tids);
  if (!wait) return;
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (wait && std::chrono::steady_clock::now() < deadline) {
    ::usleep(10000);
    wait = vfork_child(pid, tids);
  }
  if (wait)
    throw Error(fmt::format("pid {}{} is in vfork(): it waits for its child {} to run a program "
                            "(exec) or exit, and cannot be stopped until then; {} has not for {} s",
                            pid, wait->tid == pid ? "" : fmt::format(" (thread {})", wait->tid),
                            wait->child, wait->child, kPatience.count()),
                "dump again once that child has run its program or ended (a vfork child "
                "normally does at once)");
  vlog("pid {}: its vfork child has run its program", pid);
}

}  // namespace

SeizedTree SeizedTree::seize(pid_t root) {
  check_dumpable(root);
  SeizedTree tree;
  std::set<pid_t> seized;  // tids
  std::vector<pid_t> queue{root};
  std::set<pid_t> known_procs{root};
  size_t next = 0;
  while (next < queue.size()) {
    pid_t pid = queue[next++];
    Proc proc{pid, {}, {}};
    bool became_zombie = false;
    // Stop threads until a rescan finds none new: a running thread may have
    // been creating another while we stopped the rest.
    for (bool grew = true; grew;) {
      grew = false;
      std::vector<pid_t> tids;
      try {
        tids = proc::list_threads(pid);
      } catch (const SysError&) {
        if (pid == root) throw Error("pid " + std::to_string(pid) + " exited");
        break;  // a child exited and was reaped before we got to it
      }
      std::erase_if(tids, [&](pid_t tid) { return seized.count(tid) != 0; });
      if (proc.tasks.empty()) await_vfork_done(pid, tids);
      // All of them at once: the job's freeze starts with the first stop.
      Task::Stopped got = Task::seize_and_stop_all(tids, pid);
      for (auto& t : got.tasks) {
        seized.insert(t->tid());
        proc.tasks.push_back(std::move(t));
        grew = true;
      }
      for (auto& [tid, error] : got.failed) {
        try {
          std::rethrow_exception(error);
        } catch (const Error& e) {
          auto* sys = dynamic_cast<const SysError*>(&e);
          if (sys && sys->err() == ESRCH) continue;  // the thread exited meanwhile
          // A child that exited since it was listed is a zombie now: ptrace
          // refuses it (EPERM), or it ended during the stop.
          if (pid != root && proc.tasks.empty() && classify_child(pid) != ChildKind::kLive) {
            became_zombie = classify_child(pid) == ChildKind::kJobZombie;
            grew = false;
            break;
          }
          throw;
        }
      }
    }
    if (became_zombie) {
      vlog("pid {} exited while the tree was being stopped: recorded as a zombie", pid);
      tree.zombies_.push_back(pid);
    }
    if (proc.tasks.empty()) continue;
    // Leader first.
    std::stable_partition(proc.tasks.begin(), proc.tasks.end(),
                          [&](const auto& t) { return t->tid() == pid; });
    vlog("stopped pid {} ({} thread{})", pid, proc.tasks.size(), proc.tasks.size() == 1 ? "" : "s");
    tree.procs_.push_back(std::move(proc));
    // Its children are stopped in their own turn. One may still fork until
    // then; its new child shows up when that child's children are listed.
    std::vector<pid_t> tids;
    for (const auto& t : tree.procs_.back().tasks) tids.push_back(t->tid());
    for (pid_t c : proc::list_children(pid, tids)) {
      if (!known_procs.insert(c).second) continue;
      switch (classify_child(c)) {
        case ChildKind::kLive:
          queue.push_back(c);
          break;
        case ChildKind::kJobZombie:
          // It has ended: nothing of it is left to stop (ptrace refuses it),
          // but its parent will reap it and get its status.
          vlog("pid {}: child {} is a zombie", pid, c);
          tree.zombies_.push_back(c);
          break;
        case ChildKind::kSnapshotLeft:
          vlog("pid {}: child {} is a snapshot left by an interrupted dump, not the job's", pid, c);
          tree.procs_.back().left_snapshots.push_back(c);
          break;
        case ChildKind::kGone:
          break;
      }
    }
  }
  return tree;
}

size_t SeizedTree::thread_count() const {
  size_t n = 0;
  for (const auto& p : procs_) n += p.tasks.size();
  return n;
}

void SeizedTree::kill_all() {
  for (auto& p : procs_) ::kill(p.pid, SIGKILL);
  // A traced thread's end is told to its tracer first: collect it, so that
  // its parent (a namespace's init, say) can reap the process.
  // Other threads first: a leader's end is reported only after its threads'.
  for (auto& p : procs_)
    for (size_t i = p.tasks.size(); i-- > 0;) {
      int status;
      while (::waitpid(p.tasks[i]->tid(), &status, __WALL) < 0 && errno == EINTR) {}
      p.tasks[i]->abandon();
    }
}

}  // namespace snap
