#include "restore/spawn.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/nsfs.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fmt/core.h>
#include <vector>

#include "base/error.h"
#include "base/log.h"
#include "tracer/clocks.h"
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

pid_t own_pid() { return static_cast<pid_t>(::syscall(SYS_getpid)); }

// clone3 with set_tid in the caller's pid namespace. `host`: that namespace
// is the one /proc shows, so a taken pid can be named before trying.
class SetTidSpawner : public PidSpawner {
 public:
  explicit SetTidSpawner(bool host) : host_(host) {}
  pid_t spawn(pid_t want, const std::function<int()>& child, int exit_signal,
              bool clone_parent) override {
    if (host_ && want)
      if (auto who = describe_pid_user(want); !who.empty())
        throw Error("cannot restore: " + who,
                    "the original job may still be running: stop it first (or dump with --kill)");
    pid_t tid = want;
    clone_args args;
    std::memset(&args, 0, sizeof args);
    // With CLONE_PARENT the child takes the caller's exit signal (clone3
    // wants none given).
    args.exit_signal = clone_parent ? 0 : static_cast<uint64_t>(exit_signal);
    if (clone_parent) args.flags = CLONE_PARENT;
    if (want) {  // else any pid
      args.set_tid = reinterpret_cast<uint64_t>(&tid);
      args.set_tid_size = 1;
    }
    // The new process starts with every signal blocked, so one sent to its
    // pid while it is set up (a `kill` of the job's old pid) waits for the
    // restored job instead of killing a half-made process; the skeleton
    // then sets the mask it works with.
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    long rc = ::syscall(SYS_clone3, &args, sizeof args);
    if (rc == 0) ::_exit(child());
    int clone_errno = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    errno = clone_errno;
    if (rc < 0) {
      int err = errno;
      if (err == EEXIST)
        throw Error(host_ ? "cannot restore: " + describe_pid_user(want)
                          : fmt::format("cannot restore: pid {} is taken", want));
      if (err == EPERM)
        throw SysError("clone3(set_tid=" + std::to_string(want) + ")", err,
                       "choosing a pid needs CAP_CHECKPOINT_RESTORE; as an ordinary user, snap "
                       "restores in a new user and pid namespace (see 'snap check')");
      throw SysError("clone3(set_tid=" + std::to_string(want) + ")", err);
    }
    return static_cast<pid_t>(rc);
  }

 private:
  bool host_;
};

class HostPidSpace : public PidSpace {
 public:
  pid_t start_root(pid_t want, const std::function<int()>& child) override {
    parent_ = own_pid();
    enter_clocks();
    return spawner_.spawn(want, child, SIGCHLD, false);
  }
  pid_t root_parent() const override { return parent_; }
  PidSpawner& spawner() override { return spawner_; }
  bool fresh() const override { return false; }
  pid_t host_pid(pid_t saved) override { return saved; }

 private:
  SetTidSpawner spawner_{true};
  pid_t parent_ = 0;
};

// pid 1 of the namespace: starts the root with its saved pid, then reaps
// whatever ends in the namespace and ends with the root's status (which,
// as the namespace's init, ends the rest too). It dies with snap until
// snap says the tree is released ('r' on `ctl`).
int init_main(int ctl, pid_t want, const std::function<int()>& child, SetTidSpawner& spawner,
              bool own_proc, const std::function<void()>& enter_clocks) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  char c = 0;
  if (::read(ctl, &c, 1) != 1 || c != 'm') return 127;  // the id maps are written
  // The namespace's own /proc, in a mount namespace of its own: what the
  // job holds or opens as /proc/PID (a /proc/self/... path resolved at the
  // dump, an fd on a child's /proc/PID/stat) names its processes by the
  // pids they have here. Where the kernel refuses, the host's stays.
  own_proc = own_proc &&
             ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
             ::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) == 0;
  if (::write(ctl, own_proc ? "P" : "H", 1) != 1) return 127;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  int sfd = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  enter_clocks();  // root of the namespace's user namespace here: it may
  pid_t root;
  try {
    root = spawner.spawn(want, child, SIGCHLD, false);
  } catch (const std::exception&) {
    return 127;  // the report pipe tells snap nothing: it sees the root missing
  }
  // Nothing of snap's stays open here (the report pipe least of all).
  int keep_lo = std::min(ctl, sfd), keep_hi = std::max(ctl, sfd);
  ::close_range(0, static_cast<unsigned>(keep_lo - 1), 0);
  if (keep_hi > keep_lo + 1)
    ::close_range(static_cast<unsigned>(keep_lo + 1), static_cast<unsigned>(keep_hi - 1), 0);
  ::close_range(static_cast<unsigned>(keep_hi + 1), ~0u, 0);
  ::prctl(PR_SET_NAME, "snap-init");
  bool released = false;
  for (;;) {
    pollfd fds[2] = {{sfd, POLLIN, 0}, {released ? -1 : ctl, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents) {
      ssize_t n = ::read(ctl, &c, 1);
      if (n == 1 && c == 'r') {
        ::prctl(PR_SET_PDEATHSIG, 0);
        released = true;
        ssize_t w = ::write(ctl, "R", 1);  // snap may go now
        (void)w;
      } else if (n == 0) {
        return 127;  // snap gave up before the tree ran
      }
    }
    signalfd_siginfo si;
    while (::read(sfd, &si, sizeof si) == sizeof si) {}
    int status;
    for (pid_t r; (r = ::waitpid(-1, &status, WNOHANG | __WALL)) > 0;)
      if (r == root) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
}

class NamespacePidSpace : public PidSpace {
 public:
  explicit NamespacePidSpace(bool own_proc) : own_proc_(own_proc) {}

  pid_t start_root(pid_t want, const std::function<int()>& child) override {
    int p[2];  // snap <-> init, both ways
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) < 0) throw SysError("socketpair", errno);
    ScopedFd ctl_read(p[0]);
    ctl_.reset(p[1]);
    clone_args args;
    std::memset(&args, 0, sizeof args);
    args.flags = CLONE_NEWUSER | CLONE_NEWPID | (own_proc_ ? CLONE_NEWNS : 0);
    args.exit_signal = SIGCHLD;
    long rc = ::syscall(SYS_clone3, &args, sizeof args);
    if (rc == 0) {
      ctl_.reset();
      ::_exit(init_main(ctl_read.get(), want, child, spawner_, own_proc_,
                        [this] { enter_clocks(); }));
    }
    if (rc < 0)
      throw SysError("clone3(CLONE_NEWUSER | CLONE_NEWPID)", errno,
                     "this kernel or its settings do not let this user create user and pid "
                     "namespaces (see 'snap check')");
    init_ = static_cast<pid_t>(rc);
    ctl_read.reset();
    // The caller's uid and gid, mapped to themselves.
    std::string base = "/proc/" + std::to_string(init_);
    try {
      proc::write_file(base + "/setgroups", "deny");
      proc::write_file(base + "/uid_map", fmt::format("{0} {0} 1\n", ::geteuid()));
      proc::write_file(base + "/gid_map", fmt::format("{0} {0} 1\n", ::getegid()));
    } catch (...) {
      ::kill(init_, SIGKILL);
      ::waitpid(init_, nullptr, 0);
      throw;
    }
    char proc = 0;
    ssize_t n = ::write(ctl_.get(), "m", 1) == 1 ? ::read(ctl_.get(), &proc, 1) : -1;
    if (n != 1) {  // init is gone, or going: nothing of the job was started
      int err = n == 0 ? EPIPE : errno;
      ::kill(init_, SIGKILL);
      ::waitpid(init_, nullptr, 0);
      throw SysError("starting the namespace's init", err);
    }
    vlog("restore: new user and pid namespace, its init is pid {}; {}", init_,
         proc == 'P' ? "a mount namespace with its own /proc"
                     : "the host's /proc: a /proc/PID path of the job names another process there");
    return init_;
  }
  pid_t root_parent() const override { return 1; }
  PidSpawner& spawner() override { return spawner_; }
  bool fresh() const override { return true; }

  pid_t host_pid(pid_t saved) override {
    auto it = map_.find(saved);
    if (it == map_.end()) {
      rescan();
      it = map_.find(saved);
    }
    if (it == map_.end())
      throw Error(fmt::format("pid {} of the restored tree is not in its namespace", saved));
    return it->second;
  }
  std::map<pid_t, pid_t> host_pids() override {
    rescan();
    return map_;
  }
  // Init stops dying with snap, and says so before snap may go.
  void released() override {
    char ack = 0;
    if (!ctl_ || ::write(ctl_.get(), "r", 1) != 1 || ::read(ctl_.get(), &ack, 1) != 1 || ack != 'R')
      warn("could not tell the namespace's init that the job runs: {}", std::strerror(errno));
    ctl_.reset();
  }

 private:
  // Every process below init, by the pid it has in the namespace (the last
  // NSpid value) and the host's.
  void rescan() {
    map_.clear();
    std::vector<pid_t> todo{init_};
    while (!todo.empty()) {
      pid_t p = todo.back();
      todo.pop_back();
      if (p != init_)
        if (auto st = proc::try_read_file("/proc/" + std::to_string(p) + "/status")) {
          auto pos = st->find("NSpid:");
          if (pos != std::string::npos) {
            auto line = st->substr(pos, st->find('\n', pos) - pos);
            auto last = line.find_last_of(" \t");
            map_[static_cast<pid_t>(std::stol(line.substr(last + 1)))] = p;
          }
        }
      for (pid_t c : proc::list_children(p)) todo.push_back(c);
    }
  }

  bool own_proc_;
  SetTidSpawner spawner_{false};
  pid_t init_ = -1;
  ScopedFd ctl_;
  std::map<pid_t, pid_t> map_;
};

}  // namespace

void PidSpace::enter_clocks() const {
  if (!clocks_) return;
  std::string why;
  if (make_time_namespace(*clocks_, &why)) {
    vlog("restore: the job's clocks go on from the dump's (monotonic {:.3f} s, boot time {:.3f} s)",
         static_cast<double>(clocks_->monotonic_ns) / 1e9,
         static_cast<double>(clocks_->boottime_ns) / 1e9);
    return;
  }
  warn("the job's monotonic and boot-time clocks are this node's, not the dump's ({}): they "
       "jump by the difference", why);
}

std::unique_ptr<PidSpace> make_host_pid_space() { return std::make_unique<HostPidSpace>(); }

bool may_choose_pids() {
  if (::geteuid() != 0) return false;
  const auto caps = proc::read_status(::getpid()).caps;
  const uint64_t wanted = (uint64_t{1} << 40) /* CAP_CHECKPOINT_RESTORE */ |
                          (uint64_t{1} << CAP_SYS_ADMIN);
  if (!caps || !(caps->effective & wanted)) return false;
  // The capabilities count in the user namespace that owns the pid
  // namespace children are made in, and only there (or above).
  ScopedFd pidns(::open("/proc/self/ns/pid_for_children", O_RDONLY | O_CLOEXEC));
  if (!pidns) return true;  // no namespaces here: the host's
  ScopedFd owner(::ioctl(pidns.get(), NS_GET_USERNS));
  struct stat a {}, b {};
  if (!owner) return errno != EPERM;  // EPERM: owned by a namespace above ours
  return ::fstat(owner.get(), &a) == 0 && ::stat("/proc/self/ns/user", &b) == 0 &&
         a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}
std::unique_ptr<PidSpace> make_namespace_pid_space(bool own_proc) {
  return std::make_unique<NamespacePidSpace>(own_proc);
}

}  // namespace snap::restore
