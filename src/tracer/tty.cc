#include "tracer/tty.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fmt/core.h>
#include <map>
#include <thread>

#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

namespace snap::proc {

namespace {

// The kernel's struct termios2 (glibc's struct termios is another layout).
struct KernelTermios {
  uint32_t iflag, oflag, cflag, lflag;
  uint8_t line;
  uint8_t cc[19];
  uint32_t ispeed, ospeed;
};
static_assert(sizeof(KernelTermios) == 44);
constexpr unsigned long kTcGets2 = 0x802C542A;  // _IOR('T', 0x2A, struct termios2)
constexpr unsigned long kTcSets2 = 0x402C542B;  // _IOW('T', 0x2B, struct termios2)

image::Termios from_kernel(const KernelTermios& k) {
  return {k.iflag, k.oflag, k.cflag, k.lflag, k.line, {k.cc, k.cc + sizeof k.cc}, k.ispeed,
          k.ospeed};
}

KernelTermios to_kernel(const image::Termios& t) {
  KernelTermios k{};
  k.iflag = t.iflag;
  k.oflag = t.oflag;
  k.cflag = t.cflag;
  k.lflag = t.lflag;
  k.line = t.line;
  std::copy_n(t.cc.begin(), std::min(t.cc.size(), sizeof k.cc), k.cc);
  k.ispeed = t.ispeed;
  k.ospeed = t.ospeed;
  return k;
}

// TCSETS2: takes effect at once, without draining or flushing.
void set_termios(int fd, const KernelTermios& k, const std::string& what) {
  if (::ioctl(fd, kTcSets2, &k) < 0) throw SysError(what + ": ioctl(TCSETS2)", errno);
}

int queued(int fd) {
  int n = 0;
  return ::ioctl(fd, FIONREAD, &n) < 0 ? 0 : n;
}

// Everything a pty master has to read (what the slave wrote), without
// blocking; in packet mode each read starts with a status byte.
std::vector<uint8_t> drain_master(int m, bool packet, const std::string& what) {
  std::vector<uint8_t> out;
  std::vector<uint8_t> buf;
  for (;;) {
    int n = queued(m);
    if (n == 0) {
      pollfd p{m, POLLIN, 0};
      ::poll(&p, 1, 0);  // n_tty_poll pushes what the flip buffer still holds
      if ((n = queued(m)) == 0) break;
    }
    buf.resize(static_cast<size_t>(n) + 1);
    ssize_t r = ::read(m, buf.data(), static_cast<size_t>(n) + (packet ? 1 : 0));
    if (r < 0 && (errno == EAGAIN || errno == EIO)) break;
    if (r < 0) throw SysError(what + ": reading the master", errno);
    if (r == 0) break;
    size_t skip = packet ? 1 : 0;
    if (packet && buf[0] != 0) continue;  // a status packet only (TIOCPKT_*): not data
    out.insert(out.end(), buf.begin() + static_cast<long>(skip), buf.begin() + r);
  }
  return out;
}

// Everything the slave has to read (what the master wrote), into t.input.
// In canonical mode the complete lines first, a read each, to find those an
// end of file (VEOF) ended: such a read returns the line without its
// terminator (an empty one: 0), which non-canonical mode would show as a
// NUL byte (t.input_eofs). Then, in non-canonical mode for the moment, the
// rest: an unfinished line.
void drain_slave(int s, const KernelTermios& saved, image::Pty& t, const std::string& what) {
  std::vector<uint8_t>& out = t.input;
  uint8_t buf[4096];
  int err = 0;
  if (saved.lflag & ICANON) {
    auto ends_line = [&](uint8_t c) {
      return c == '\n' || (saved.cc[VEOL] != 0 && c == saved.cc[VEOL]) ||
             (saved.cc[VEOL2] != 0 && c == saved.cc[VEOL2]);
    };
    // A line ready is what poll reports in canonical mode (the fd may be
    // the job's own, blocking); at most as many as the queue may hold.
    for (size_t n = 0; n <= kMaxPtyQueue; n++) {
      pollfd p{s, POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0 || !(p.revents & POLLIN) || (p.revents & POLLHUP)) break;
      ssize_t r = ::read(s, buf, sizeof buf);
      if (r < 0) {
        if (errno != EAGAIN && errno != EIO) err = errno;
        break;
      }
      out.insert(out.end(), buf, buf + r);
      if (r == 0 || !ends_line(buf[r - 1])) t.input_eofs.push_back(out.size());
    }
    if (err) throw SysError(what + ": reading the slave", err);
  }
  KernelTermios k = saved;
  k.lflag &= ~static_cast<uint32_t>(ICANON);
  k.cc[VMIN] = 0;
  k.cc[VTIME] = 0;
  set_termios(s, k, what);
  for (;;) {
    ssize_t r = ::read(s, buf, sizeof buf);
    if (r > 0) {
      out.insert(out.end(), buf, buf + r);
      continue;
    }
    if (r < 0 && errno != EAGAIN && errno != EIO) err = errno;
    break;
  }
  set_termios(s, saved, what);
  if (err) throw SysError(what + ": reading the slave", err);
}

void write_all(int fd, const std::vector<uint8_t>& data, const std::string& what) {
  for (size_t done = 0; done < data.size();) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 100);
      continue;
    }
    if (n <= 0) throw SysError(what, n < 0 ? errno : EIO);
    done += static_cast<size_t>(n);
  }
}

// Waits, up to 5 s, until `ready` holds.
template <typename F>
bool wait_for(F ready) {
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!ready()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

struct TtyFd {
  size_t proc = 0, fd = 0;
  uint32_t index = 0;
  bool master = false;
  bool alias = false;  // /dev/tty
  bool hung_up = false;  // a slave whose master was closed (its node is gone)
  ScopedFd copy;
};

std::string fd_name(const image::Process& p, const image::FileDesc& f) {
  return fmt::format("pid {} fd {} ({})", p.pid, f.fd, f.path);
}

// The pty fds of the job, each with a copy (pidfd_getfd) of it.
std::vector<TtyFd> find_pty_fds(const image::Checkpoint& ckpt) {
  std::vector<TtyFd> out;
  for (size_t pi = 0; pi < ckpt.processes.size(); pi++) {
    const auto& p = ckpt.processes[pi];
    if (p.zombie) continue;
    ScopedFd pidfd;
    for (size_t fi = 0; fi < p.fds.size(); fi++) {
      const auto& f = p.fds[fi];
      if (f.type != image::FdType::Tty) continue;
      struct stat st {};
      if (::stat(fmt::format("/proc/{}/fd/{}", p.pid, f.fd).c_str(), &st) != 0 || !S_ISCHR(st.st_mode))
        continue;
      unsigned maj = major(st.st_rdev), min = minor(st.st_rdev);
      bool ptmx = maj == 5 && min == 2, ctty = maj == 5 && min == 0;
      bool slave = maj >= 136 && maj <= 143;
      if (!ptmx && !ctty && !slave) continue;
      if (!pidfd) {
        pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, p.pid, 0)));
        if (!pidfd) throw SysError(fmt::format("pidfd_open(pid {})", p.pid), errno);
      }
      TtyFd t;
      t.proc = pi;
      t.fd = fi;
      t.copy.reset(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), f.fd, 0)));
      if (!t.copy) {
        if (errno == EBADF) continue;
        throw SysError(fmt::format("pidfd_getfd({}) to read the terminal", fd_name(p, f)), errno,
                       "snap needs Linux 5.6 or later to dump pseudo-terminals");
      }
      if (ptmx) {
        unsigned n = 0;
        if (::ioctl(t.copy.get(), TIOCGPTN, &n) < 0)
          throw SysError(fmt::format("ioctl(TIOCGPTN) on {}", fd_name(p, f)), errno);
        t.index = n;
        t.master = true;
      } else {
        t.alias = ctty;
        t.hung_up = slave && f.path.ends_with(" (deleted)");
        if (ctty) {  // /dev/tty: the terminal it was opened on
          unsigned dev = 0;
          if (::ioctl(t.copy.get(), TIOCGDEV, &dev) < 0) continue;
          maj = major(dev);
          min = minor(dev);
          if (maj < 136 || maj > 143) continue;  // not a pty
        }
        t.index = (maj - 136) * 256 + min;
      }
      out.push_back(std::move(t));
    }
  }
  return out;
}

// The session a pty controls: recorded when its leader is dumped too.
void read_session(const image::Checkpoint& ckpt, int m, image::Pty& t, const std::string& who) {
  pid_t sid = 0;
  if (::ioctl(m, TIOCGSID, &sid) < 0 || sid <= 0) return;  // ENOTTY: controls no session
  auto in = [&](auto pred) {
    return std::find_if(ckpt.processes.begin(), ckpt.processes.end(), pred);
  };
  auto leader = in([&](const image::Process& p) { return p.pid == sid && !p.zombie; });
  if (leader == ckpt.processes.end()) {
    auto member = in([&](const image::Process& p) { return p.sid == sid; });
    if (member != ckpt.processes.end())
      throw Error(fmt::format("{} is the controlling terminal of session {}, which pid {} is in, "
                              "but the session's leader is not dumped",
                              who, sid, member->pid),
                  "dump the tree from the session leader");
    return;  // a session outside the job: it keeps no terminal after a restore
  }
  t.session = sid;
  pid_t fg = 0;
  if (::ioctl(m, TIOCGPGRP, &fg) == 0 && fg > 0) t.fg_pgrp = fg;
}

}  // namespace

int open_pty_peer(int master, int flags) { return ::ioctl(master, TIOCGPTPEER, flags); }

namespace {

void refill(int master, int slave, const image::Pty& t, const KernelTermios& final,
            const std::string& what) {
  int off = 0;
  ::ioctl(master, TIOCPKT, &off);  // the echoes below are read back plain
  if (!t.input.empty() || !t.input_eofs.empty()) {
    // Written to the master again with no input processing, the line
    // discipline in the saved canonical mode (so lines end where they did:
    // at a newline, at the saved VEOL and VEOL2, and at an end of file,
    // written again as VEOF where it was) and echo on: the echoes say when
    // all of it has been taken in (VEOF is not echoed). The other editing
    // characters are a byte the data does not hold; VEOF another.
    bool used[256] = {};
    for (uint8_t c : t.input) used[c] = true;
    used['\n'] = true;
    auto unused = [&](int from) {
      while (from < 256 && used[from]) from++;
      return from;
    };
    const int spare = unused(1);
    used[final.cc[VEOL]] = used[final.cc[VEOL2]] = true;
    const int eof = spare < 256 ? unused(spare + 1) : 256;
    if (spare == 256 || (!t.input_eofs.empty() && eof == 256))
      throw Error(what + ": the queued input holds every byte value; snap cannot put it back");
    KernelTermios k = final;
    k.iflag = 0;
    k.oflag = 0;
    k.lflag = (final.lflag & ICANON) | ECHO;
    std::fill(std::begin(k.cc), std::end(k.cc), static_cast<uint8_t>(spare));
    k.cc[VMIN] = 1;
    k.cc[VTIME] = 0;
    k.cc[VEOL] = final.cc[VEOL];
    k.cc[VEOL2] = final.cc[VEOL2];
    if (!t.input_eofs.empty()) k.cc[VEOF] = static_cast<uint8_t>(eof);
    set_termios(master, k, what);
    // The input up to each end of file, then VEOF; then the rest.
    size_t from = 0;
    for (size_t i = 0; i <= t.input_eofs.size(); i++) {
      const size_t to = i < t.input_eofs.size() ? t.input_eofs[i] : t.input.size();
      if (to < from || to > t.input.size())
        throw Error(what + ": an end of file out of order in the queued input",
                    "the image is damaged");
      std::vector<uint8_t> piece(t.input.begin() + static_cast<ptrdiff_t>(from),
                                 t.input.begin() + static_cast<ptrdiff_t>(to));
      if (i < t.input_eofs.size()) piece.push_back(static_cast<uint8_t>(eof));
      write_all(master, piece, what + ": writing the queued input to the master");
      from = to;
    }
    size_t echoed = 0;
    uint8_t buf[4096];
    bool ok = wait_for([&] {
      pollfd p{master, POLLIN, 0};
      if (::poll(&p, 1, 0) > 0 && (p.revents & POLLIN)) {
        ssize_t r = ::read(master, buf, std::min(sizeof buf, t.input.size() - echoed));
        if (r > 0) echoed += static_cast<size_t>(r);
      }
      return echoed >= t.input.size();
    });
    if (!ok)
      throw Error(fmt::format("{}: the terminal took {} of the {} queued input bytes back", what,
                              echoed, t.input.size()));
  }
  if (!t.output.empty()) {
    KernelTermios k = final;
    k.oflag = 0;  // no output processing: the bytes as the job's slave wrote them
    k.lflag &= ~static_cast<uint32_t>(TOSTOP);
    set_termios(master, k, what);
    write_all(slave, t.output, what + ": writing the queued output to the slave");
    if (!wait_for([&] {
          pollfd p{master, POLLIN, 0};
          ::poll(&p, 1, 0);
          return static_cast<size_t>(queued(master)) >= t.output.size();
        }))
      throw Error(fmt::format("{}: the terminal took {} of the {} queued output bytes back", what,
                              queued(master), t.output.size()));
  }
}

}  // namespace

void refill_pty(int master, int slave, const image::Pty& t, const std::string& what) {
  const KernelTermios final = to_kernel(t.termios);
  try {
    refill(master, slave, t, final, what);
  } catch (const Error&) {
    ::ioctl(master, kTcSets2, &final);  // never left with the settings used to refill it
    int packet = t.packet ? 1 : 0;
    ::ioctl(master, TIOCPKT, &packet);
    throw;
  }
  set_termios(master, final, what);
  struct winsize ws {t.winsize[0], t.winsize[1], t.winsize[2], t.winsize[3]};
  if (::ioctl(master, TIOCSWINSZ, &ws) < 0) throw SysError(what + ": ioctl(TIOCSWINSZ)", errno);
  int packet = t.packet ? 1 : 0;
  if (::ioctl(master, TIOCPKT, &packet) < 0) throw SysError(what + ": ioctl(TIOCPKT)", errno);
}

void collect_ptys(image::Checkpoint& ckpt) {
  std::vector<TtyFd> fds = find_pty_fds(ckpt);
  std::map<uint32_t, TtyFd*> masters;
  for (auto& t : fds)
    if (t.master) masters.emplace(t.index, &t);
  for (auto& [index, mfd] : masters) {
    const auto& mp = ckpt.processes[mfd->proc];
    const std::string who = fmt::format("pty {} (master {})", index, fd_name(mp, mp.fds[mfd->fd]));
    const int m = mfd->copy.get();
    image::Pty t;
    t.index = index;
    KernelTermios k{};
    if (::ioctl(m, kTcGets2, &k) < 0) throw SysError(who + ": ioctl(TCGETS2)", errno);
    t.termios = from_kernel(k);
    struct winsize ws {};
    if (::ioctl(m, TIOCGWINSZ, &ws) == 0) t.winsize = {ws.ws_row, ws.ws_col, ws.ws_xpixel, ws.ws_ypixel};
    int v = 0;
    if (::ioctl(m, TIOCGPTLCK, &v) == 0) t.locked = v != 0;
    v = 0;
    if (::ioctl(m, TIOCGPKT, &v) == 0) t.packet = v != 0;
    read_session(ckpt, m, t, who);

    // The queues. The slave side through a slave fd of the job, else a
    // new description of the slave (a locked pty has none, nor data).
    ScopedFd peer;
    int s = -1;
    for (auto& f : fds)
      if (!f.master && !f.alias && f.index == index) {
        s = f.copy.get();
        break;
      }
    if (s < 0 && !t.locked) {
      peer.reset(open_pty_peer(m, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC));
      s = peer.get();
    }
    struct stat st {};
    if (s >= 0 && ::fstat(s, &st) == 0) {
      t.uid = st.st_uid;
      t.gid = st.st_gid;
      t.mode = st.st_mode;
    }
    t.output = drain_master(m, t.packet, who);
    if (s >= 0) drain_slave(s, k, t, who);
    if (t.input.size() + t.input_eofs.size() > kMaxPtyQueue || t.output.size() > kMaxPtyQueue) {
      std::string msg = fmt::format("{} has {} bytes queued for the slave and {} for the master",
                                    who, t.input.size(), t.output.size());
      if (s >= 0) {  // best effort: the job gets them back, in order
        image::Pty back = t;
        try {
          refill_pty(m, s, back, who);
        } catch (const Error&) {
        }
      }
      throw Error(msg, fmt::format("snap restores up to {} queued bytes each way; dump once the "
                                   "job has read its terminal",
                                   kMaxPtyQueue));
    }
    if (!t.input.empty() || !t.input_eofs.empty() || !t.output.empty()) {
      if (s < 0) throw Error(who + ": data was read from it, and no slave to put it back");
      refill_pty(m, s, t, who);
    }
    if (!t.input.empty() || !t.output.empty())
      vlog("{}: {} bytes queued for the slave, {} for the master", who, t.input.size(),
           t.output.size());
    ckpt.ptys.push_back(std::move(t));
  }
  // Slaves whose master was closed: hung up, they come back hung up.
  std::map<uint32_t, TtyFd*> hung;
  for (auto& f : fds) {
    if (!f.hung_up) continue;
    if (masters.count(f.index)) {
      const auto& p = ckpt.processes[f.proc];
      throw Error(fmt::format("{}: a hung-up slave of a pty numbered as another pty the job holds "
                              "(pty {})", fd_name(p, p.fds[f.fd]), f.index),
                  "snap cannot tell the two apart");
    }
    if (hung.emplace(f.index, &f).second) {
      image::Pty t;
      t.index = f.index;
      t.hung_up = true;
      ckpt.ptys.push_back(std::move(t));
    }
  }
  for (auto& f : fds)
    if (masters.count(f.index) || hung.count(f.index))
      ckpt.processes[f.proc].fds[f.fd].pty = image::PtyEnd{f.index, f.master};
}

}  // namespace snap::proc
