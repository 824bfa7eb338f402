#include "restore/threads.h"

#include <linux/sched.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <cstring>
#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "restore/spawn.h"

namespace snap::restore {

std::vector<std::unique_ptr<Task>> create_threads(RemoteSyscalls& leader, RemotePage& page,
                                                  const image::Process& p, bool check_free) {
  std::vector<std::unique_ptr<Task>> out;
  constexpr uint64_t kTidAt = 512;  // clone_args at 0, the wanted tid after it
  for (size_t i = 1; i < p.threads.size(); i++) {
    const pid_t tid = p.threads[i].tid;
    if (check_free)
      if (auto who = describe_pid_user(tid); !who.empty())
        throw Error(fmt::format("cannot restore thread {} of pid {}: {}", tid, p.pid, who));
    clone_args args;
    std::memset(&args, 0, sizeof args);
    // A thread as pthread_create makes one; its TLS, stack and
    // clear_child_tid come with its saved registers and state.
    args.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
    args.set_tid = page.put(static_cast<pid_t>(tid), kTidAt);
    args.set_tid_size = 1;
    long rc = leader.checked(fmt::format("clone3(thread {})", tid), SYS_clone3, page.put(args),
                             sizeof args);
    if (rc != tid)
      throw Error(fmt::format("thread {} of pid {} came back as {}", tid, p.pid, rc));
    // The new thread as snap sees it (in a fresh pid namespace its tid
    // there differs from the saved one).
    pid_t seen = static_cast<pid_t>(leader.last_event_message(PTRACE_EVENT_CLONE));
    if (seen <= 0) seen = tid;
    int status = 0;
    while (::waitpid(seen, &status, __WALL) < 0 && errno == EINTR) {}
    if (!WIFSTOPPED(status))
      throw Error(fmt::format("new thread {} of pid {} did not stop at birth", tid, p.pid));
    out.push_back(Task::adopt_stopped(seen));
  }
  if (!out.empty()) vlog("restore: {} more thread(s) created", out.size());
  return out;
}

}  // namespace snap::restore
