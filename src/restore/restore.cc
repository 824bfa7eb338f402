#include "restore/restore.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/personality.h>
#include <sys/rseq.h>
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
#include "restore/signals.h"
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
int skeleton_main(const image::Process& p, const FdPlan& plan, int status_fd) {
  std::string err;
  auto report = [&](const std::string& msg) {
    ssize_t n = ::write(status_fd, msg.data(), msg.size());
    (void)n;
    return 127;
  };
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
  if (p.threads.size() != 1)
    throw Error(fmt::format("pid {} has {} threads; restoring multi-threaded processes is not "
                            "supported yet",
                            p.pid, p.threads.size()));
  const image::ThreadState& thread = p.threads[0];
  FdPlan plan = plan_fds(p, opts.allow_changed_files);
  for (const auto& w : plan.warnings) warn("{}", w);

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) < 0) throw SysError("pipe2", errno);
  ScopedFd status_read(fds[0]), status_write(fds[1]);
  pid_t child = spawner.spawn(p.pid, [&] {
    status_read.reset();
    return skeleton_main(p, plan, status_write.get());
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
               reinterpret_cast<void*>(PTRACE_O_EXITKILL | PTRACE_O_TRACESYSGOOD)) < 0) {
    ::kill(child, SIGKILL);
    throw SysError(fmt::format("ptrace(PTRACE_SETOPTIONS, pid {})", child), errno);
  }
  auto task = Task::adopt_stopped(child);
  try {
    {
      RemoteSyscalls rs(*task, find_syscall_site(child));
      rebuild_address_space(rs, p, img);
      restore_signal_state(rs, *task, p, thread);
      if (thread.rseq) {
        const auto& [area, len, sig] = *thread.rseq;
        rs.checked("rseq registration", SYS_rseq, area, len, 0, sig);
      }
      rs.set_final_regs(Registers::from_bytes(thread.gpregs));
    }
    task->set_xsave(thread.xsave);
    task->set_signal_mask(thread.sigmask);
  } catch (...) {
    ::kill(child, SIGKILL);
    task->abandon();
    ::waitpid(child, &status, __WALL);
    throw;
  }
  task->detach(0);
  vlog("restore: pid {} is running", child);
  return child;
}

}  // namespace snap::restore
