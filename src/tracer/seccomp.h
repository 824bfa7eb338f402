// Seccomp, which snap cannot restore: a restored job runs under the
// filters snap restore runs under (it is a fork of it), the same as the
// job's when both run in one container or under one batch system's
// filter. Any thread of the job under another mode or more filters set
// them up itself, and is refused before anything is injected: a filter
// would be lost at restore, and the parasite's system calls in a thread
// under strict mode would kill that thread.
#pragma once

#include <sys/types.h>

#include <set>
#include <vector>

namespace snap {

// Threads read while the job still runs (a leave-running dump's hints):
// filters can only be added, never taken off, so a thread that differs
// then is refused at once, and one that matched is not read again while
// the job is stopped (one /proc read a thread, ~10 us: 2.7 ms for 256).
// One that installs its first filter in the few milliseconds between
// these reads and the stop is not seen.
class SeccompHints {
 public:
  static SeccompHints read(const std::vector<pid_t>& pids);
  // Refuses (throws, naming it) a thread of process `pid`, its leader
  // included, under seccomp of its own (the one place a dump checks it):
  // those read() saw as snap's are taken as they were, the others (threads
  // started since, every thread of a --kill dump without hints) are read
  // now, by two threads of snap's where there are many.
  void refuse_threads(pid_t pid, const std::vector<pid_t>& tids) const;

 private:
  std::set<pid_t> same_;  // tids whose seccomp was snap's
};

}  // namespace snap
