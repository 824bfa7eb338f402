#include "restore/anon_fds.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fmt/core.h>

#include "base/scoped_fd.h"

#ifndef TFD_IOC_SET_TICKS
#define TFD_IOC_SET_TICKS _IOW('T', 0, uint64_t)
#endif

namespace snap::restore {

namespace {

using image::FdType;

int fail(std::string* err, const std::string& what) {
  *err = fmt::format("{}: {}", what, std::strerror(errno));
  return -1;
}

timespec to_timespec(int64_t ns) {
  return {static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
}

int make_signalfd(const image::FileDesc& f, std::string* err) {
  sigset_t set;
  sigemptyset(&set);
  for (int sig = 1; sig <= 64; sig++)
    if (f.signalfd_mask & (uint64_t{1} << (sig - 1))) sigaddset(&set, sig);
  int fd = ::signalfd(-1, &set, SFD_CLOEXEC | (f.flags & O_NONBLOCK ? SFD_NONBLOCK : 0));
  if (fd < 0) return fail(err, fmt::format("signalfd(mask {:#x})", f.signalfd_mask));
  return fd;
}

int make_timerfd(const image::FileDesc& f, std::string* err) {
  const image::TimerFdState t = f.timerfd.value_or(image::TimerFdState{});
  ScopedFd fd(::timerfd_create(t.clock_id, TFD_CLOEXEC | (f.flags & O_NONBLOCK ? TFD_NONBLOCK : 0)));
  if (!fd) return fail(err, fmt::format("timerfd_create(clock {})", t.clock_id));
  int64_t value = t.value_ns;
  // Expired with a period, not yet re-armed (that happens on read): the
  // next expiry is a period away.
  if (value == 0 && t.interval_ns) value = t.interval_ns;
  itimerspec its{to_timespec(t.interval_ns), to_timespec(value)};
  if ((t.settime_flags & TFD_TIMER_ABSTIME) && value) {
    timespec now{};
    if (::clock_gettime(t.clock_id, &now) < 0) return fail(err, "clock_gettime");
    int64_t at = now.tv_sec * 1000000000ll + now.tv_nsec + value;
    its.it_value = to_timespec(at);
  }
  if (::timerfd_settime(fd.get(), t.settime_flags, &its, nullptr) < 0)
    return fail(err, fmt::format("timerfd_settime(flags {:#o}, value {} ns, interval {} ns)",
                                 t.settime_flags, value, t.interval_ns));
  uint64_t ticks = t.ticks;
  if (ticks && ::ioctl(fd.get(), TFD_IOC_SET_TICKS, &ticks) < 0)
    return fail(err, fmt::format("timerfd: setting {} unread expirations (TFD_IOC_SET_TICKS)", ticks));
  return fd.release();
}

// Reads away the queued events of a non-blocking inotify fd.
void drain(int fd) {
  alignas(inotify_event) char buf[16384];
  while (::read(fd, buf, sizeof buf) > 0) {}
}

int make_inotify(const image::FileDesc& f, std::string* err,
                 const std::map<uint64_t, int>* ghosts) {
  ScopedFd fd(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!fd) return fail(err, "inotify_init1");
  ScopedFd spare;  // a file no job watches, to use up watch numbers
  std::string spare_path;
  int last = 0;    // the number the last watch got
  for (const auto& w : f.inotify_watches) {
    for (int burnt = 0; last < w.wd - 1; burnt++) {
      if (!spare) {
        spare.reset(::memfd_create("snap-inotify", MFD_CLOEXEC));
        if (!spare) return fail(err, "memfd_create");
        spare_path = "/proc/self/fd/" + std::to_string(spare.get());
      }
      int got = ::inotify_add_watch(fd.get(), spare_path.c_str(), IN_ACCESS);
      if (got < 0) return fail(err, "inotify_add_watch (a placeholder watch)");
      ::inotify_rm_watch(fd.get(), got);
      if (got <= last) break;  // numbers wrapped: cannot reach w.wd
      last = got;
      if (burnt % 1000 == 999) drain(fd.get());  // each removal queued an IN_IGNORED
    }
    std::string path = w.path;
    uint32_t follow = IN_DONT_FOLLOW;
    if (w.ghost) {  // the remade deleted file, through its magic link
      if (!ghosts || !ghosts->count(w.ghost)) {
        errno = ENOENT;
        return fail(err, fmt::format("watch {} is on deleted file {}, which was not remade", w.wd,
                                     w.ghost));
      }
      path = "/proc/self/fd/" + std::to_string(ghosts->at(w.ghost));
      follow = 0;
    }
    int got = ::inotify_add_watch(fd.get(), path.c_str(), w.mask | follow);
    if (got < 0) return fail(err, fmt::format("inotify_add_watch({}, {:#x})", path, w.mask));
    if (got != w.wd) {
      errno = EINVAL;
      return fail(err, fmt::format("inotify watch on {} came back as number {}, not {}", path,
                                   got, w.wd));
    }
    last = got;
  }
  drain(fd.get());
  if (!(f.flags & O_NONBLOCK) && ::fcntl(fd.get(), F_SETFL, 0) < 0)
    return fail(err, "fcntl(F_SETFL)");
  return fd.release();
}

// Who holds a conflicting lock, for the error message.
std::string holder(int fd, const struct flock& want) {
  struct flock q = want;
  if (::fcntl(fd, F_GETLK, &q) == 0 && q.l_type != F_UNLCK)
    return fmt::format(" (pid {} holds a conflicting lock)", q.l_pid);
  return {};
}

int take_lock(int fd, const image::FileLock& l, std::string* err) {
  using K = image::LockKind;
  const char* type = l.write ? "write" : "read";
  switch (l.kind) {
    case K::Posix:
    case K::Ofd: {
      struct flock fl{};
      fl.l_type = static_cast<short>(l.write ? F_WRLCK : F_RDLCK);
      fl.l_whence = SEEK_SET;
      fl.l_start = static_cast<off_t>(l.start);
      fl.l_len = static_cast<off_t>(l.len);
      bool posix = l.kind == K::Posix;
      if (::fcntl(fd, posix ? F_SETLK : F_OFD_SETLK, &fl) == 0) return 0;
      int e = errno;
      std::string who = holder(fd, fl);
      errno = e;
      return fail(err, fmt::format("{} {} lock on bytes {}+{}{}", posix ? "POSIX" : "OFD", type,
                                   l.start, l.len ? std::to_string(l.len) : "EOF", who));
    }
    case K::Flock:
      if (::flock(fd, (l.write ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) return 0;
      return fail(err, fmt::format("flock {} lock (another open of the file holds one)", type));
    case K::Lease:
      if (::fcntl(fd, F_SETLEASE, l.write ? F_WRLCK : F_RDLCK) == 0) return 0;
      return fail(err, fmt::format("{} lease (F_SETLEASE; the file is open elsewhere{})", type,
                                   l.write ? "" : " for writing"));
  }
  return 0;
}

int set_owner(int fd, const image::FileOwner& o, std::string* err) {
  if (o.pid) {
    // F_SETOWN records the caller's uid and euid, which decide whom the
    // signal may reach: take the saved ones for the call if they differ.
    uid_t r = 0, e = 0, s = 0;
    ::getresuid(&r, &e, &s);
    bool switched = (o.uid != r || o.euid != e) && e == 0 &&
                    ::setresuid(o.uid, o.euid, static_cast<uid_t>(-1)) == 0;
    f_owner_ex own{static_cast<__pid_type>(o.type), o.pid};
    int rc = ::fcntl(fd, F_SETOWN_EX, &own);
    int saved = errno;
    if (switched) ::setresuid(r, e, static_cast<uid_t>(-1));
    errno = saved;
    if (rc < 0) return fail(err, fmt::format("F_SETOWN_EX(type {}, pid {})", o.type, o.pid));
  }
  if (o.signum && ::fcntl(fd, F_SETSIG, o.signum) < 0)
    return fail(err, fmt::format("F_SETSIG({})", o.signum));
  return 0;
}

int make_pidfd(const image::FileDesc& f, std::string* err) {
  // pidfd_open takes PIDFD_NONBLOCK (O_NONBLOCK) and PIDFD_THREAD (O_EXCL).
  // A grandchild is made by its parent's skeleton, which runs beside this
  // one: it may not exist yet (ESRCH), so it is waited for a while.
  constexpr int kTries = 1000;  // 10 ms apart: 10 s
  for (int i = 0;; i++) {
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, f.pidfd_pid,
                                        static_cast<unsigned>(f.flags & (O_NONBLOCK | O_EXCL))));
    if (fd >= 0) return fd;
    if (errno != ESRCH || i == kTries) return fail(err, fmt::format("pidfd_open(pid {})", f.pidfd_pid));
    ::usleep(10000);
  }
}

}  // namespace

bool is_anon_fd(const image::FileDesc& f) {
  return f.type == FdType::SignalFd || f.type == FdType::TimerFd || f.type == FdType::Inotify ||
         f.type == FdType::PidFd;
}

bool watches_ghost(const image::FileDesc& f) {
  for (const auto& w : f.inotify_watches)
    if (w.ghost) return true;
  return false;
}

int make_anon_fd(const image::FileDesc& f, std::string* err,
                 const std::map<uint64_t, int>* ghosts) {
  switch (f.type) {
    case FdType::SignalFd: return make_signalfd(f, err);
    case FdType::TimerFd: return make_timerfd(f, err);
    case FdType::Inotify: return make_inotify(f, err, ghosts);
    case FdType::PidFd: return make_pidfd(f, err);
    default: break;
  }
  errno = EINVAL;
  return fail(err, "not an anonymous-inode fd snap makes");
}

int apply_fd_state(int fd, const image::FileDesc& f, std::string* err) {
  for (const auto& l : f.locks)
    if (l.kind != image::LockKind::Posix && take_lock(fd, l, err) < 0) return -1;
  if (f.owner && set_owner(fd, *f.owner, err) < 0) return -1;
  return 0;
}

// An eventfd with its saved counter; plain system calls (skeletons use it).
int make_eventfd(uint64_t count, bool semaphore, int flags) {
  int fd = ::eventfd(0, EFD_CLOEXEC | (flags & O_NONBLOCK ? EFD_NONBLOCK : 0) |
                            (semaphore ? EFD_SEMAPHORE : 0));
  // eventfd() takes an unsigned int; a larger counter is written instead.
  if (fd >= 0 && count && ::write(fd, &count, sizeof count) != sizeof count) {
    int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

// Registers `t` with the epoll `epoll_fd` again. A file the job watched
// under a number it has since closed or reused (t.via: the number it holds
// the file at now) is put at that number for the call, and whatever was
// there put back: the epoll keys its watches by (file, number).
int watch_again(int epoll_fd, const image::EpollTarget& t, std::string* err) {
  epoll_event ev{};
  ev.events = t.events;
  ev.data.u64 = t.data;
  auto fail = [&](const char* what) {
    *err = fmt::format("fd {}: {} (watch of fd {} via fd {}): {}", epoll_fd, what, t.fd, t.via,
                       std::strerror(errno));
    return -1;
  };
  if (t.via < 0) {
    if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, t.fd, &ev) < 0 && errno != EEXIST)
      return fail("epoll_ctl(EPOLL_CTL_ADD)");
    return 0;
  }
  int fd_flags = ::fcntl(t.fd, F_GETFD);
  int saved = fd_flags < 0 ? -1 : ::fcntl(t.fd, F_DUPFD_CLOEXEC, 0);
  if (fd_flags >= 0 && saved < 0) return fail("saving the fd in the way");
  if (::dup2(t.via, t.fd) < 0) return fail("dup2");
  int r = ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, t.fd, &ev);
  if (r < 0 && errno != EEXIST) return fail("epoll_ctl(EPOLL_CTL_ADD)");
  if (saved < 0) {
    ::close(t.fd);
    return 0;
  }
  if (::dup3(saved, t.fd, (fd_flags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0)
    return fail("putting back the fd in the way");
  ::close(saved);
  return 0;
}

int make_epoll(int flags) {
  int fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (fd >= 0 && (flags & O_NONBLOCK)) ::fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

}  // namespace snap::restore
