#include "restore/skeleton.h"
#include "restore/tty.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/rseq.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fmt/core.h>

#include "base/error.h"
#include "base/scoped_fd.h"
#include "tracer/proc.h"

namespace snap::restore {

namespace {

constexpr uint32_t kRseqSig = 0x53053053;  // glibc's RSEQ_SIG on x86
constexpr int kRseqFlagUnregister = 1;

void unregister_rseq() {
  if (__rseq_size == 0) return;
  auto area = static_cast<char*>(__builtin_thread_pointer()) + __rseq_offset;
  // glibc registers 32 bytes (or its feature size); try both.
  if (::syscall(SYS_rseq, area, 32, kRseqFlagUnregister, kRseqSig) != 0)
    ::syscall(SYS_rseq, area, __rseq_size, kRseqFlagUnregister, kRseqSig);
}

// glibc's getpid() may answer from the parent's cache after clone3.
pid_t own_pid() { return static_cast<pid_t>(::syscall(SYS_getpid)); }

void report(int fd, SkeletonReport::Kind kind, const std::string& text = {}) {
  SkeletonReport r;
  r.pid = own_pid();
  r.kind = kind;
  text.copy(r.text, sizeof r.text - 1);
  ssize_t n = ::write(fd, &r, sizeof r);
  (void)n;
}

int fail(const SkeletonContext& ctx, const std::string& text) {
  report(ctx.report_fd, SkeletonReport::kFailed, text);
  return 127;
}

// Until snap holds it with PTRACE_O_EXITKILL, a skeleton must not outlive
// its parent (and through it, snap): die with it, and now if it is gone.
bool bind_to_parent(pid_t parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  return ::syscall(SYS_getppid) == parent;
}

// Sessions and groups made at birth; joining another group comes later,
// once every group exists (snap does it through ptrace).
std::string make_session_and_group(const TreePlan::Node& n) {
  if (n.setsid && ::setsid() < 0) return fmt::format("setsid: {}", std::strerror(errno));
  if (n.group_leader && ::setpgid(0, 0) < 0) return fmt::format("setpgid: {}", std::strerror(errno));
  return {};
}

// A helper holds a process group whose leader had exited, until its
// members have joined; then snap kills it and its creator reaps it.
int helper_main(const SkeletonContext& ctx, pid_t creator) {
  if (!bind_to_parent(creator)) return 127;
  if (::setpgid(0, 0) < 0) return fail(ctx, fmt::format("setpgid: {}", std::strerror(errno)));
  ::close_range(0, static_cast<unsigned>(ctx.report_fd - 1), 0);
  ::close_range(static_cast<unsigned>(ctx.report_fd + 1), ~0u, 0);
  report(ctx.report_fd, SkeletonReport::kHelperReady);
  ::close(ctx.report_fd);
  for (;;) ::pause();
}

// A session helper (restore/tree.h): starts the session, forks its members
// as its creator's children, and ends; the creator reaps it.
int session_helper_main(const SkeletonContext& ctx, const SessionHelper& h, pid_t creator) {
  if (!bind_to_parent(creator)) return 127;
  if (::setsid() < 0)
    return fail(ctx, fmt::format("setsid for session {}: {}", h.pid, std::strerror(errno)));
  try {
    for (const image::Process* m : h.members)
      ctx.spawner.spawn(m->pid, [&] { return skeleton_main(ctx, m->pid, creator); }, 0,
                        /*clone_parent=*/true);
  } catch (const std::exception& e) {
    return fail(ctx, e.what());
  }
  return 0;
}

// A zombie: takes its ids and name, then ends as the original did, for its
// parent to collect after the restore.
int zombie_main(const SkeletonContext& ctx, const image::Process& z) {
  const auto& n = ctx.plan.node(z.pid);
  make_session_and_group(n);
  if (n.join_group) ::setpgid(0, n.join_group);  // best effort: the group may not exist yet
  if (n.join_external_group) ::setpgid(0, ctx.snap_pgid);
  ::prctl(PR_SET_NAME, z.comm.c_str());
  if (WIFSIGNALED(z.exit_status)) {
    int sig = WTERMSIG(z.exit_status);
    rlimit none{0, 0};
    ::setrlimit(RLIMIT_CORE, &none);  // a core dump now would be a new file
    ::signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
    ::syscall(SYS_kill, own_pid(), sig);
  }
  ::_exit(WEXITSTATUS(z.exit_status));
}

void set_rlimits(const image::Process& p) {
  for (const auto& r : p.rlimits) {
    rlimit lim{r.cur, r.max};
    if (::setrlimit(static_cast<__rlimit_resource>(r.resource), &lim) == 0) continue;
    // Raising a hard limit needs CAP_SYS_RESOURCE: keep today's hard limit.
    rlimit now{};
    ::getrlimit(static_cast<__rlimit_resource>(r.resource), &now);
    lim = {std::min<rlim_t>(r.cur, now.rlim_max), now.rlim_max};
    ::setrlimit(static_cast<__rlimit_resource>(r.resource), &lim);
  }
}

// Writes `value` to /proc/self/NAME: 0, or the errno of what failed.
int write_own_proc_file(const char* name, const std::string& value) {
  ScopedFd fd(::open((std::string("/proc/self/") + name).c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return errno;
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size()))
    return errno ? errno : EIO;
  return 0;
}

// oom_score_adj, THP and no_new_privs, as the job had them. Empty, or what
// failed: lowering oom_score_adj below what snap restore has needs
// CAP_SYS_RESOURCE, and a restore without it must not give the job another.
std::string set_process_settings(const image::Process& p, bool thp_changed) {
  if (p.oom_score_adj) {
    std::string v = std::to_string(*p.oom_score_adj);
    if (int err = write_own_proc_file("oom_score_adj", v))
      return fmt::format("writing oom_score_adj {}: {}{}", v, std::strerror(err),
                         err == EACCES ? " (lowering it needs CAP_SYS_RESOURCE)" : "");
  }
  // The audit login uid: inherited from snap restore, set only where the
  // job's differs (that needs CAP_AUDIT_CONTROL).
  if (p.loginuid) {
    auto own = proc::try_read_file("/proc/self/loginuid");
    if (own && static_cast<uint32_t>(std::strtoul(own->c_str(), nullptr, 10)) != *p.loginuid) {
      std::string v = std::to_string(*p.loginuid);
      if (int err = write_own_proc_file("loginuid", v))
        return fmt::format("setting the audit login uid (loginuid) {} (snap restore's is {}): {}{}",
                           v, own->substr(0, own->find('\n')), std::strerror(err),
                           err == EPERM ? " (changing it needs CAP_AUDIT_CONTROL; restore from the "
                                          "job's own login session)"
                                        : "");
    }
  }
  // Registrations for membarrier(2) belong to the address space, which the
  // skeleton keeps (its mappings are replaced, not the mm).
  for (uint32_t reg : {4u, 16u, 64u, 256u})
    if ((p.membarrier & reg) && ::syscall(SYS_membarrier, reg, 0, 0) < 0)
      return fmt::format("membarrier registration {}: {}", reg, std::strerror(errno));
  if ((p.thp_disabled || thp_changed) &&
      ::prctl(PR_SET_THP_DISABLE, p.thp_disabled.value_or(false) ? 1 : 0, 0, 0, 0) < 0)
    return fmt::format("prctl(PR_SET_THP_DISABLE): {}", std::strerror(errno));
  // Last: it only limits what an execve() may gain, never what snap does next.
  if (p.no_new_privs.value_or(false) && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
    return fmt::format("prctl(PR_SET_NO_NEW_PRIVS): {}", std::strerror(errno));
  return {};
}

}  // namespace

int skeleton_main(const SkeletonContext& ctx, pid_t pid, pid_t parent) {
  if (!bind_to_parent(parent)) return 127;
  const auto& n = ctx.plan.node(pid);
  const image::Process& p = *n.proc;
  // Nothing is delivered to a skeleton; a zombie child's SIGCHLD is
  // discarded (SIGCHLD unblocked, default action) as it was long ago.
  sigset_t all;
  sigfillset(&all);
  sigdelset(&all, SIGCHLD);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);
  ::signal(SIGCHLD, SIG_DFL);
  if (auto err = make_session_and_group(n); !err.empty()) return fail(ctx, err);
  const ProcessFiles& files = ctx.files.of(pid);
  // Before any child: they inherit the controlling terminal.
  if (auto err = take_terminal(files.ctty_fd, files.fg_fd); !err.empty()) return fail(ctx, err);
  if (p.child_subreaper.value_or(0)) ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  // Memory its children shared with it: in place before they are forked.
  // Filled in small pages: a huge page for each page of a sparse range
  // would take hundreds of times its memory. Every process below inherits
  // that setting, and each takes its job's own with the rest below.
  const bool thp_changed = !ctx.cow.empty();
  if (const auto& parked = ctx.cow.parked_by(pid); !parked.empty()) {
    if (::prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) < 0)
      return fail(ctx, fmt::format("prctl(PR_SET_THP_DISABLE): {}", std::strerror(errno)));
    if (auto err = map_parked_ranges(parked); !err.empty()) return fail(ctx, err);
    report(ctx.report_fd, SkeletonReport::kParked);
    char go = 0;
    ssize_t n;
    do n = ::read(ctx.parked_go.at(pid), &go, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1 || go != 'g') return fail(ctx, "snap did not fill the memory shared with its children");
  }

  try {
    // A group a child makes is made here too, at once: one made by the
    // child alone may not exist yet when a later child (a zombie, which
    // joins and ends at once) joins it. Both may; the second changes nothing.
    for (const auto& h : n.helpers) {
      pid_t helper = ctx.spawner.spawn(h.pid, [&] { return helper_main(ctx, pid); }, 0);
      ::setpgid(helper, helper);
    }
    // Sessions whose leader had exited, with the members this process is
    // the parent of: their helpers end once those exist, reaped here, before
    // snap traces this process (no SIGCHLD is left for the job).
    for (const auto& h : n.session_helpers) {
      pid_t helper = ctx.spawner.spawn(h.pid, [&] { return session_helper_main(ctx, h, pid); });
      int status = 0;
      while (::waitpid(helper, &status, 0) < 0)
        if (errno != EINTR) throw SysError(fmt::format("waitpid for session helper {}", h.pid), errno);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw Error(fmt::format("the helper of session {} failed", h.pid));
    }
    // Its parent's children in the session it leads (restore/tree.h).
    for (const image::Process* s : n.siblings)
      ctx.spawner.spawn(s->pid, [&] { return skeleton_main(ctx, s->pid, parent); }, 0,
                        /*clone_parent=*/true);
    std::vector<pid_t> zombies;
    for (const image::Process* c : n.children) {
      if (c->zombie) {
        ctx.spawner.spawn(c->pid, [&] { return zombie_main(ctx, *c); });
        zombies.push_back(c->pid);
      } else {
        pid_t child = ctx.spawner.spawn(c->pid, [&] { return skeleton_main(ctx, c->pid, pid); });
        if (ctx.plan.node(c->pid).group_leader) ::setpgid(child, child);
      }
    }
    // Zombies are dead before snap traces this process: a SIGCHLD would be
    // queued for a traced process, and reach the job.
    for (pid_t z : zombies) {
      siginfo_t si;
      while (::waitid(P_PID, static_cast<id_t>(z), &si, WEXITED | WNOWAIT) < 0 && errno == EINTR) {}
    }
  } catch (const std::exception& e) {
    return fail(ctx, e.what());
  }

  std::string err;
  // A removed cwd: the remade directory, before install_fds closes snap's fd on it.
  if (files.cwd_fd >= 0 && ::fchdir(files.cwd_fd) < 0)
    return fail(ctx, fmt::format("fchdir to the remade cwd {}: {}", p.cwd, std::strerror(errno)));
  if (install_fds(files, ctx.report_fd, &err) < 0) return fail(ctx, err);
  if (files.cwd_fd < 0 && ::chdir(p.cwd.c_str()) < 0)
    return fail(ctx, fmt::format("chdir {}: {}", p.cwd, std::strerror(errno)));
  ::umask(p.umask);
  set_rlimits(p);
  ::syscall(SYS_personality, static_cast<unsigned long>(p.personality));
  if (auto err = set_process_settings(p, thp_changed); !err.empty()) return fail(ctx, err);
  // glibc registered an rseq area in snap's TLS; the kernel writes to it on
  // every return to user space, so it must go before that memory does.
  unregister_rseq();
  report(ctx.report_fd, SkeletonReport::kReady);
  ::close(ctx.report_fd);
  for (;;) ::pause();  // until snap seizes it
}

}  // namespace snap::restore
