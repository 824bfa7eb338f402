#include "restore/tty.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fmt/core.h>

#include "base/error.h"
#include "tracer/tty.h"

namespace snap::restore {

namespace {

constexpr int kStatusFlags = O_APPEND | O_NONBLOCK | O_ASYNC;

struct Pair {
  ScopedFd master, slave;  // slave: O_RDWR, O_NOCTTY
};

// The slave's node as it was (grantpt and fchown give it owner, group and
// permissions): a restore that cannot give it them refuses.
void set_owner(int slave, const image::Pty& t, const std::string& what) {
  struct stat st {};
  if (!t.mode || ::fstat(slave, &st) < 0) return;
  if ((st.st_uid != t.uid || st.st_gid != t.gid) && ::fchown(slave, t.uid, t.gid) < 0)
    throw SysError(fmt::format("{}: giving /dev/pts node its owner {}:{} again", what, t.uid, t.gid),
                   errno, "that needs CAP_CHOWN; restore as the user who dumped the job");
  if ((st.st_mode & 07777) != (t.mode & 07777) && ::fchmod(slave, t.mode & 07777) < 0)
    throw SysError(fmt::format("{}: giving /dev/pts node its mode {:o} again", what, t.mode & 07777),
                   errno);
}

// A new pty (/dev/ptmx; its number may differ from t.index) with t's
// queued data, settings, owner and lock.
Pair make_pty(const image::Pty& t, const std::string& what) {
  Pair p;
  p.master.reset(::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!p.master) throw SysError(what + ": open /dev/ptmx", errno);
  int unlock = 0;
  if (::ioctl(p.master.get(), TIOCSPTLCK, &unlock) < 0)
    throw SysError(what + ": ioctl(TIOCSPTLCK)", errno);
  p.slave.reset(proc::open_pty_peer(p.master.get(), O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!p.slave) throw SysError(what + ": ioctl(TIOCGPTPEER)", errno, "snap needs Linux 4.13 or later");
  if (t.hung_up) return p;
  set_owner(p.slave.get(), t, what);
  proc::refill_pty(p.master.get(), p.slave.get(), t, what);
  int lock = 1;
  if (t.locked && ::ioctl(p.master.get(), TIOCSPTLCK, &lock) < 0)
    throw SysError(what + ": ioctl(TIOCSPTLCK)", errno);
  return p;
}

}  // namespace

PtyTable::PtyTable(const image::Checkpoint& ckpt, Keep keep, std::vector<std::string>& warnings)
    : keep_(std::move(keep)) {
  for (const auto& t : ckpt.ptys) {
    const std::string what = fmt::format("pty {} of the image", t.index);
    Pair pair = make_pty(t, what);
    Made& m = made_[t.index];
    m.pty = &t;
    m.slave = keep_(pair.slave.release(), what);
    if (t.hung_up) m.closing_master = std::move(pair.master);
    else m.master = keep_(pair.master.release(), what);
    bool fg_found = !t.session || !t.fg_pgrp;
    for (const auto& p : ckpt.processes)
      if (p.pid == t.fg_pgrp && !p.zombie && p.sid == t.session && p.pgid == p.pid) fg_found = true;
    if (!fg_found)
      warnings.push_back(fmt::format("pty {}: its foreground group {} has no live leader to make "
                                     "it the foreground again; the session leader's group is",
                                     t.index, t.fg_pgrp));
  }
}

PtyTable::Made& PtyTable::find(uint32_t index, const std::string& what) {
  auto it = made_.find(index);
  if (it == made_.end())
    throw Error(fmt::format("{} refers to pty {}, which the image does not hold", what, index),
                "the image is damaged");
  return it->second;
}

int PtyTable::open_end(const image::FileDesc& f, const std::string& what) {
  Made& m = find(f.pty->index, what);
  if (f.pty->master) {
    if (m.master < 0 || !masters_used_.insert(f.pty->index).second)
      throw Error(what + ": a second open file description of a pty master, or of a closed one",
                  "the image is damaged");
    ::fcntl(m.master, F_SETFL, f.flags & kStatusFlags);
    return m.master;
  }
  int master = m.master >= 0 ? m.master : m.closing_master.get();
  int flags = (f.flags & (O_ACCMODE | kStatusFlags)) | O_NOCTTY | O_CLOEXEC;
  ScopedFd s(proc::open_pty_peer(master, flags));
  if (!s) throw SysError(what + ": opening the pty's slave (TIOCGPTPEER)", errno);
  return keep_(s.release(), what);
}

bool PtyTable::opened_by_skeleton(const image::Process& p, const image::FileDesc& f) const {
  if (!f.pty || f.pty->master || f.path != "/dev/tty") return false;
  auto it = made_.find(f.pty->index);
  return it != made_.end() && it->second.pty->session && it->second.pty->session == p.sid;
}

int PtyTable::ctty_of(const image::Process& p) const {
  for (const auto& [index, m] : made_)
    if (m.pty->session && m.pty->session == p.pid) return m.slave;
  return -1;
}

int PtyTable::foreground_of(const image::Process& p) const {
  for (const auto& [index, m] : made_)
    if (m.pty->session && m.pty->fg_pgrp == p.pid && p.sid == m.pty->session && p.pgid == p.pid)
      return m.slave;
  return -1;
}

void PtyTable::hang_up() {
  for (auto& [index, m] : made_) m.closing_master.reset();
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
