// Seccomp a job set up itself. A restored job runs under the filters snap
// restore runs under (it is a fork of it): the same as the job's when both
// run in one container or under one batch system's filter. A thread under
// another mode or more filters set them up itself; they are saved
// (PTRACE_SECCOMP_GET_FILTER) and installed again at restore, and while snap
// works in such a job (the parasite, the snapshot, restore's system calls)
// the kernel lets snap's injected calls through (PTRACE_O_SUSPEND_SECCOMP):
// a filter may forbid them, and strict mode would kill the thread at the
// first. Both need CAP_SYS_ADMIN and snap itself under no seccomp; without
// them such a thread is refused before anything is injected.
#pragma once

#include <sys/types.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "image/checkpoint.h"

namespace snap {

// Whether this snap may save and restore a job's own seccomp (CAP_SYS_ADMIN
// in its effective set, no seccomp of its own).
bool seccomp_savable();

// Threads read while the job still runs (a leave-running dump's hints):
// filters can only be added, never taken off, so a thread under snap's own
// then is not read again while the job is stopped (one /proc read a
// thread, ~10 us: 2.7 ms for 256), and one under its own is refused at
// once where snap cannot save it. One that installs its first filter in the
// few milliseconds between these reads and the stop is not seen.
class SeccompHints {
 public:
  static SeccompHints read(const std::vector<pid_t>& pids);
  // The threads of process `pid`, its leader included, under seccomp of
  // their own: tid -> mode (1 strict, 2 filters). Those read() saw as
  // snap's are taken as they were, the others (threads started since,
  // every thread of a --kill dump without hints) are read now, by two
  // threads of snap's where there are many. Throws, naming the thread,
  // where one cannot be saved (before anything is injected).
  std::map<pid_t, int> own_threads(pid_t pid, const std::vector<pid_t>& tids) const;

 private:
  std::set<pid_t> same_;  // tids whose seccomp was snap's
};

// The seccomp of thread `tid` of process `pid`, stopped by snap's ptrace,
// in `mode` (own_threads): its filters, oldest first.
image::Seccomp read_seccomp(pid_t pid, pid_t tid, int mode);

// "strict mode", "2 filter(s), 12 instruction(s)" (snap info).
std::string describe_seccomp(const image::Seccomp& s);

}  // namespace snap
