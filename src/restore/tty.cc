#include "restore/tty.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fmt/core.h>

#include "base/error.h"
#include "tracer/tty.h"

namespace snap::restore {

PtyPair make_pty(const image::Pty& t) {
  const std::string what = fmt::format("pty {} of the image", t.index);
  PtyPair p;
  p.master.reset(::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!p.master) throw SysError(what + ": open /dev/ptmx", errno);
  int unlock = 0;
  if (::ioctl(p.master.get(), TIOCSPTLCK, &unlock) < 0)
    throw SysError(what + ": ioctl(TIOCSPTLCK)", errno);
  p.slave.reset(proc::open_pty_peer(p.master.get(), O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!p.slave) throw SysError(what + ": ioctl(TIOCGPTPEER)", errno, "snap needs Linux 4.13 or later");
  proc::refill_pty(p.master.get(), p.slave.get(), t, what);
  int lock = 1;
  if (t.locked && ::ioctl(p.master.get(), TIOCSPTLCK, &lock) < 0)
    throw SysError(what + ": ioctl(TIOCSPTLCK)", errno);
  return p;
}

ScopedFd open_pty_slave(int master, int flags, const std::string& what) {
  int open_flags = (flags & (O_ACCMODE | O_NONBLOCK | O_APPEND | O_ASYNC)) | O_NOCTTY | O_CLOEXEC;
  ScopedFd s(proc::open_pty_peer(master, open_flags));
  if (!s) throw SysError(what + ": opening the slave (TIOCGPTPEER)", errno);
  return s;
}

std::string take_terminal(int ctty_fd, int fg_fd) {
  if (ctty_fd >= 0 && ::ioctl(ctty_fd, TIOCSCTTY, 0) < 0)
    return fmt::format("making the pty its controlling terminal (TIOCSCTTY): {}", std::strerror(errno));
  if (fg_fd >= 0) {
    pid_t group = ::getpgrp();
    // SIGTTOU is blocked in a skeleton: a background group may do this.
    if (::ioctl(fg_fd, TIOCSPGRP, &group) < 0)
      return fmt::format("making group {} the pty's foreground group (TIOCSPGRP): {}", group,
                         std::strerror(errno));
  }
  return {};
}

}  // namespace snap::restore
