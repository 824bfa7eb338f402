// Creating the skeleton process with the saved pid. Behind an interface
// because how a pid is chosen depends on privilege: clone3(set_tid) needs
// CAP_CHECKPOINT_RESTORE in the pid namespace's owner; unprivileged users
// will get a new user+pid namespace instead (not yet implemented).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>

namespace snap::restore {

class PidSpawner {
 public:
  virtual ~PidSpawner() = default;
  // Creates a child with pid `want` (a fork of the caller) that runs
  // `child` and _exit()s with its result; the parent gets `exit_signal`
  // when it ends (0: none, and only a __WALL wait collects it). Returns the
  // child's pid. Throws Error saying who holds the pid, or what privilege is
  // missing.
  virtual pid_t spawn(pid_t want, const std::function<int()>& child, int exit_signal = SIGCHLD) = 0;
};

// clone3 with set_tid in snap's own pid namespace.
std::unique_ptr<PidSpawner> make_set_tid_spawner();

// "pid 1234 is in use by 'counter' (state S)" or empty when free.
std::string describe_pid_user(pid_t pid);

}  // namespace snap::restore
