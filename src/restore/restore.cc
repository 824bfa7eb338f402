#include "restore/restore.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/personality.h>
#include <sys/rseq.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"
#include "restore/address_space.h"
#include "restore/files.h"
#include "restore/remote_page.h"
#include "restore/signals.h"
#include "restore/threads.h"
#include "tracer/remote.h"
#include "tracer/task.h"

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

// Runs in the skeleton (a fork of snap with the saved pid), before snap
// takes it over with ptrace. Reports failures as text on `status_fd`;
// closing status_fd without a word means success.
int skeleton_main(const image::Process& p, const FdPlan& plan, int status_fd, pid_t snap_pid) {
  std::string err;
  auto report = [&](const std::string& msg) {
    ssize_t n = ::write(status_fd, msg.data(), msg.size());
    (void)n;
    return 127;
  };
  // Until snap holds it with PTRACE_O_EXITKILL, the skeleton must not
  // outlive snap: die with it (and if snap is already gone, now). Restore
  // sets the job's own parent-death signal at the end.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::syscall(SYS_getppid) != snap_pid) return 127;
  if (p.sid == p.pid) {
    if (::setsid() < 0) return report(fmt::format("setsid: {}", std::strerror(errno)));
  } else if (p.pgid == p.pid) {
    if (::setpgid(0, 0) < 0) return report(fmt::format("setpgid: {}", std::strerror(errno)));
  }
  int keep = install_fds(plan, status_fd, &err);
  if (keep < 0) return report(err);
  status_fd = keep;
  if (::chdir(p.cwd.c_str()) < 0)
    return report(fmt::format("chdir {}: {}", p.cwd, std::strerror(errno)));
  ::umask(p.umask);
  for (const auto& r : p.rlimits) {
    rlimit lim{r.cur, r.max};
    if (::setrlimit(static_cast<__rlimit_resource>(r.resource), &lim) == 0) continue;
    // Raising a hard limit needs CAP_SYS_RESOURCE: keep today's hard limit.
    rlimit now{};
    ::getrlimit(static_cast<__rlimit_resource>(r.resource), &now);
    lim = {std::min<rlim_t>(r.cur, now.rlim_max), now.rlim_max};
    ::setrlimit(static_cast<__rlimit_resource>(r.resource), &lim);
  }
  ::syscall(SYS_personality, static_cast<unsigned long>(p.personality));
  // glibc registered an rseq area in snap's TLS; the kernel writes to it on
  // every return to user space, so it must go before that memory does.
  unregister_rseq();
  if (::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr) < 0)
    return report(fmt::format("ptrace(PTRACE_TRACEME): {}", std::strerror(errno)));
  ::close(status_fd);
  // glibc's raise() would use the parent's cached tid: signal by raw pid.
  ::syscall(SYS_kill, ::syscall(SYS_getpid), SIGSTOP);
  return 127;  // not reached: snap replaces this process's memory meanwhile
}

}  // namespace

pid_t restore_process(image::ImageReader& img, const image::Process& p, PidSpawner& spawner,
                      const RestoreOptions& opts) {
  if (p.threads.empty()) throw Error(fmt::format("pid {} has no threads in the image", p.pid));
  FdPlan plan = plan_fds(p, opts.allow_changed_files);
  for (const auto& w : plan.warnings) warn("{}", w);

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) < 0) throw SysError("pipe2", errno);
  ScopedFd status_read(fds[0]), status_write(fds[1]);
  const pid_t snap_pid = ::getpid();
  pid_t child = spawner.spawn(p.pid, [&] {
    status_read.reset();
    return skeleton_main(p, plan, status_write.get(), snap_pid);
  });
  status_write.reset();

  // Either the skeleton reports a failure, or it closes the pipe and stops.
  std::string failure;
  char buf[512];
  for (ssize_t n; (n = ::read(status_read.get(), buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    failure.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  while (::waitpid(child, &status, WUNTRACED | __WALL) < 0 && errno == EINTR) {}
  if (!failure.empty() || !WIFSTOPPED(status)) {
    if (WIFSTOPPED(status)) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, __WALL);
    }
    throw Error(fmt::format("restoring pid {}: {}", p.pid,
                            failure.empty() ? "the skeleton process died" : failure));
  }
  vlog("restore: skeleton pid {} stopped; rebuilding it", child);
  if (::ptrace(PTRACE_SETOPTIONS, child, nullptr,
               reinterpret_cast<void*>(PTRACE_O_EXITKILL | PTRACE_O_TRACESYSGOOD |
                                       PTRACE_O_TRACECLONE)) < 0) {
    ::kill(child, SIGKILL);
    throw SysError(fmt::format("ptrace(PTRACE_SETOPTIONS, pid {})", child), errno);
  }
  auto leader = Task::adopt_stopped(child);
  std::vector<std::unique_ptr<Task>> others;  // threads 1.., as in p.threads
  // A thread's own state, and the registers it resumes with.
  auto put_back = [&](const image::ThreadState& saved, RemoteSyscalls& rs, RemotePage& page) {
    restore_thread_state(rs, page, p.pid, saved);
    rs.set_final_regs(Registers::from_bytes(saved.gpregs));
  };
  try {
    {
      RemoteSyscalls rs(*leader, find_syscall_site(child));
      rebuild_address_space(rs, p, img);
      leader->set_signal_mask(~0ull);  // nothing is delivered until the end
      RemotePage page(rs);
      others = create_threads(rs, page, p);
      restore_process_signals(rs, page, p);
      put_back(p.threads[0], rs, page);
    }
    for (size_t i = 0; i < others.size(); i++) {
      Task& t = *others[i];
      t.set_signal_mask(~0ull);
      RemoteSyscalls rs(t, find_syscall_site(child));
      RemotePage page(rs);
      put_back(p.threads[i + 1], rs, page);
    }
    // Extended state and masks last: no more code runs before the job's.
    for (size_t i = 0; i <= others.size(); i++) {
      Task& t = i == 0 ? *leader : *others[i - 1];
      t.set_xsave(p.threads[i].xsave);
      t.set_signal_mask(p.threads[i].sigmask);
    }
  } catch (...) {
    ::kill(child, SIGKILL);
    for (auto& t : others) t->abandon();
    leader->abandon();
    ::waitpid(child, &status, __WALL);
    throw;
  }
  for (auto& t : others) t->detach(0);
  leader->detach(0);
  vlog("restore: pid {} is running", child);
  return child;
}

}  // namespace snap::restore
