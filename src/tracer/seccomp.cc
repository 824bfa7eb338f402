#include "tracer/seccomp.h"

#include <linux/filter.h>
#include <linux/capability.h>
#include <sys/ptrace.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
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

std::string who(pid_t pid, pid_t tid) {
  return tid == pid ? fmt::format("pid {}", pid) : fmt::format("thread {} of pid {}", tid, pid);
}

// Whether `st` (a thread's /proc status) shows seccomp of its own: another
// mode or filter count than snap's. Throws, naming the thread, where it
// does and snap cannot save it.
bool own_seccomp(pid_t pid, pid_t tid, const proc::Status& st) {
  const proc::Status& self = own_status();
  if (st.seccomp == self.seccomp && st.seccomp_filters == self.seccomp_filters) return false;
  if (seccomp_savable()) return true;
  throw Error(fmt::format("{} runs under {}, snap under {}: the job set up seccomp itself",
                          who(pid, tid), under(st), under(self)),
              self.seccomp != 0
                  ? "snap cannot save a job's seccomp from under seccomp of its own; nothing was "
                    "injected into the job"
                  : "only root (CAP_SYS_ADMIN) can read a job's seccomp filters: dump and restore "
                    "it as root; nothing was injected into the job");
}

}  // namespace

bool seccomp_savable() {
  const proc::Status& self = own_status();
  return self.seccomp == 0 && self.caps && (self.caps->effective >> CAP_SYS_ADMIN & 1);
}

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
      if (!own_seccomp(pid, tid, proc::parse_status(*text))) h.same_.insert(tid);
    }
  }
  return h;
}

std::map<pid_t, int> SeccompHints::own_threads(pid_t pid, const std::vector<pid_t>& tids) const {
  std::vector<pid_t> unread;
  for (pid_t tid : tids)
    if (!same_.count(tid)) unread.push_back(tid);
  std::map<pid_t, int> own;
  std::mutex m;
  parallel_for(unread.size(), unread.size() >= 64 ? 2 : 1, [&](size_t i) {
    const pid_t tid = unread[i];
    auto st = proc::parse_status(proc::read_file(fmt::format("/proc/{}/task/{}/status", pid, tid)));
    if (!own_seccomp(pid, tid, st)) return;
    std::lock_guard lock(m);
    own[tid] = st.seccomp;
  });
  return own;
}

image::Seccomp read_seccomp(pid_t pid, pid_t tid, int mode) {
  image::Seccomp out;
  if (mode == 1) {
    out.strict = true;
    return out;
  }
  // Index 0 is the oldest filter (the kernel counts from the end of the
  // chain it keeps newest first), as the image keeps them.
  for (unsigned long i = 0;; i++) {
    const long n = ::ptrace(PTRACE_SECCOMP_GET_FILTER, tid, i, nullptr);
    if (n < 0 && errno == ENOENT && i > 0) break;
    if (n <= 0) {
      const int err = n < 0 ? errno : EINVAL;
      throw SysError(fmt::format("cannot read seccomp filter {} of {}: "
                                 "ptrace(PTRACE_SECCOMP_GET_FILTER)", i, who(pid, tid)),
                     err,
                     err == EINVAL   ? "this kernel cannot show seccomp filters "
                                       "(CONFIG_CHECKPOINT_RESTORE)"
                     : err == EACCES ? "only root of the host (CAP_SYS_ADMIN outside any user "
                                       "namespace) may read them"
                                     : "");
    }
    image::SeccompFilter f;
    f.program.resize(static_cast<size_t>(n) * sizeof(sock_filter));
    if (::ptrace(PTRACE_SECCOMP_GET_FILTER, tid, i, f.program.data()) != n)
      throw SysError(fmt::format("cannot read seccomp filter {} of {}", i, who(pid, tid)), errno);
    __ptrace_seccomp_metadata meta{i, 0};
    if (::ptrace(PTRACE_SECCOMP_GET_METADATA, tid, sizeof meta, &meta) < 0)
      throw SysError(fmt::format("cannot read the flags of seccomp filter {} of {}: "
                                 "ptrace(PTRACE_SECCOMP_GET_METADATA)", i, who(pid, tid)),
                     errno);
    f.flags = meta.flags;
    out.filters.push_back(std::move(f));
  }
  return out;
}

std::string describe_seccomp(const image::Seccomp& s) {
  if (s.strict) return "strict mode";
  size_t instructions = 0;
  for (const auto& f : s.filters) instructions += f.program.size() / sizeof(sock_filter);
  return fmt::format("{} filter(s), {} instruction(s)", s.filters.size(), instructions);
}

}  // namespace snap
