#include "restore/spawn.h"

#include <linux/sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "base/error.h"
#include "tracer/proc.h"

namespace snap::restore {

std::string describe_pid_user(pid_t pid) {
  auto text = proc::try_read_file("/proc/" + std::to_string(pid) + "/stat");
  if (!text) return {};
  auto st = proc::parse_stat(*text);
  return "pid " + std::to_string(pid) + " is in use by '" + st.comm + "' (state " +
         std::string(1, st.state) + ", parent " + std::to_string(st.ppid) + ")";
}

namespace {

class SetTidSpawner : public PidSpawner {
 public:
  pid_t spawn(pid_t want, const std::function<int()>& child, int exit_signal) override {
    if (auto who = describe_pid_user(want); !who.empty())
      throw Error("cannot restore: " + who,
                  "the original job may still be running: stop it first (or dump with --kill)");
    pid_t tid = want;
    clone_args args;
    std::memset(&args, 0, sizeof args);
    args.exit_signal = static_cast<uint64_t>(exit_signal);
    args.set_tid = reinterpret_cast<uint64_t>(&tid);
    args.set_tid_size = 1;
    long rc = ::syscall(SYS_clone3, &args, sizeof args);
    if (rc == 0) ::_exit(child());
    if (rc < 0) {
      int err = errno;
      if (err == EEXIST) throw Error("cannot restore: " + describe_pid_user(want));
      if (err == EPERM)
        throw SysError("clone3(set_tid=" + std::to_string(want) + ")", err,
                       "choosing a pid needs CAP_CHECKPOINT_RESTORE (run as root); restoring "
                       "unprivileged in a new pid namespace is not supported yet");
      throw SysError("clone3(set_tid=" + std::to_string(want) + ")", err);
    }
    return static_cast<pid_t>(rc);
  }
};

}  // namespace

std::unique_ptr<PidSpawner> make_set_tid_spawner() { return std::make_unique<SetTidSpawner>(); }

}  // namespace snap::restore
