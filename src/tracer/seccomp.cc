#include "tracer/seccomp.h"

#include <unistd.h>

#include <string>

#include <fmt/core.h>

#include "base/error.h"
#include "base/parallel.h"
#include "tracer/proc.h"

namespace snap {

namespace {

const proc::Status& own_status() {
  static const proc::Status self = proc::read_status(::getpid());
  return self;
}

std::string under(const proc::Status& st) {
  if (st.seccomp == 0) return "no seccomp";
  if (st.seccomp == 1) return "seccomp's strict mode";
  return fmt::format("{} seccomp filter(s)", st.seccomp_filters);
}

// Throws, naming the thread, where `st` (a thread's /proc status) shows
// another seccomp mode or filter count than snap's own.
void refuse_own_seccomp(pid_t pid, pid_t tid, const proc::Status& st) {
  const proc::Status& self = own_status();
  if (st.seccomp == self.seccomp && st.seccomp_filters == self.seccomp_filters) return;
  const std::string who = tid == pid ? fmt::format("pid {}", pid)
                                     : fmt::format("thread {} of pid {}", tid, pid);
  throw Error(fmt::format("{} runs under {}, snap under {}: the job set up seccomp itself", who,
                          under(st), under(self)),
              "snap cannot restore seccomp filters yet; nothing was injected into the job");
}

}  // namespace

SeccompHints SeccompHints::read(const std::vector<pid_t>& pids) {
  SeccompHints h;
  for (pid_t pid : pids) {
    std::vector<pid_t> tids;
    try {
      tids = proc::list_threads(pid);
    } catch (const SysError&) {
      continue;  // gone: the stop finds out
    }
    for (pid_t tid : tids) {
      auto text = proc::try_read_file(fmt::format("/proc/{}/task/{}/status", pid, tid));
      if (!text) continue;  // ended: read at the stop if it is there again
      refuse_own_seccomp(pid, tid, proc::parse_status(*text));
      h.same_.insert(tid);
    }
  }
  return h;
}

void SeccompHints::refuse_threads(pid_t pid, const std::vector<pid_t>& tids) const {
  std::vector<pid_t> unread;
  for (pid_t tid : tids)
    if (!same_.count(tid)) unread.push_back(tid);
  parallel_for(unread.size(), unread.size() >= 64 ? 2 : 1, [&](size_t i) {
    const pid_t tid = unread[i];
    refuse_own_seccomp(pid, tid, proc::parse_status(proc::read_file(
                                     fmt::format("/proc/{}/task/{}/status", pid, tid))));
  });
}

}  // namespace snap
