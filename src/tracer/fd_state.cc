#include "tracer/fd_state.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <fmt/core.h>

#include "base/error.h"
#include "base/scoped_fd.h"

#ifndef F_GETOWNER_UIDS
#define F_GETOWNER_UIDS 17
#endif

namespace snap::proc {

namespace {

uint64_t num(std::string_view s, int base = 10) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc() || p != s.data() + s.size())
    throw Error("fdinfo: cannot parse number '" + std::string(s) + "'");
  return v;
}

// "(12, 345)" split at blanks: seconds and nanoseconds.
int64_t timespec_ns(const std::vector<std::string_view>& f) {
  if (f.size() < 2 || !f[0].starts_with('(') || !f[0].ends_with(',') || !f[1].ends_with(')'))
    throw Error("fdinfo: malformed timerfd time");
  uint64_t sec = num(f[0].substr(1, f[0].size() - 2));
  uint64_t nsec = num(f[1].substr(0, f[1].size() - 1));
  return static_cast<int64_t>(sec * 1000000000ull + nsec);
}

// "name:value" fields of an inotify line.
std::string_view field(const std::vector<std::string_view>& f, std::string_view name) {
  for (auto v : f)
    if (v.size() > name.size() && v.starts_with(name) && v[name.size()] == ':')
      return v.substr(name.size() + 1);
  throw Error("fdinfo: inotify line without " + std::string(name));
}

std::vector<uint8_t> hex_bytes(std::string_view s) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < s.size(); i += 2)
    out.push_back(static_cast<uint8_t>(num(s.substr(i, 2), 16)));
  return out;
}

// "1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (fs/locks.c lock_get_status).
void parse_lock(const std::vector<std::string_view>& f, FdInfo& fi) {
  std::string line;
  for (auto v : f) line += std::string(v) + " ";
  if (f.size() < 8) throw Error("fdinfo: malformed lock line '" + line + "'");
  image::FileLock l;
  std::string_view kind = f[1], mode = f[2], type = f[3];
  if (kind == "POSIX") l.kind = image::LockKind::Posix;
  else if (kind == "FLOCK") l.kind = image::LockKind::Flock;
  else if (kind == "OFDLCK") l.kind = image::LockKind::Ofd;
  else if (kind == "LEASE" && mode == "ACTIVE") l.kind = image::LockKind::Lease;
  else {
    if (fi.unsupported_lock.empty()) fi.unsupported_lock = line;
    return;
  }
  if (type != "READ" && type != "WRITE") {
    if (fi.unsupported_lock.empty()) fi.unsupported_lock = line;
    return;
  }
  l.write = type == "WRITE";
  if (l.kind == image::LockKind::Posix || l.kind == image::LockKind::Ofd) {
    l.start = num(f[6]);
    if (f[7] != "EOF") l.len = num(f[7]) - l.start + 1;
  }
  fi.locks.push_back(l);
}

}  // namespace

void parse_fd_state_line(std::string_view key, const std::vector<std::string_view>& f,
                         FdInfo& fi) {
  auto timer = [&]() -> image::TimerFdState& {
    if (!fi.timerfd) fi.timerfd.emplace();
    return *fi.timerfd;
  };
  if (key == "sigmask") fi.sigmask = num(f[0], 16);
  else if (key == "Pid") fi.pidfd_pid = static_cast<int32_t>(std::stol(std::string(f[0])));
  else if (key == "clockid") timer().clock_id = static_cast<int32_t>(num(f[0]));
  else if (key == "ticks" && fi.timerfd) timer().ticks = num(f[0]);
  else if (key == "settime flags" && fi.timerfd) timer().settime_flags = static_cast<int32_t>(num(f[0], 8));
  else if (key == "it_value" && fi.timerfd) timer().value_ns = timespec_ns(f);
  else if (key == "it_interval" && fi.timerfd) timer().interval_ns = timespec_ns(f);
  else if (key == "inotify wd") {
    // "inotify wd:1 ino:5a sdev:800001 mask:fce ignored_mask:0 fhandle-bytes:8
    //  fhandle-type:1 f_handle:5a0000002e6a5ef1", all hex.
    FdInfo::InotifyMark m;
    m.wd = static_cast<int32_t>(num(f[0], 16));
    m.ino = num(field(f, "ino"), 16);
    m.sdev = static_cast<uint32_t>(num(field(f, "sdev"), 16));
    m.mask = static_cast<uint32_t>(num(field(f, "mask"), 16));
    for (auto v : f)
      if (v.starts_with("fhandle-type:")) m.handle_type = static_cast<int32_t>(num(v.substr(13), 16));
      else if (v.starts_with("f_handle:")) m.handle = hex_bytes(v.substr(9));
    fi.inotify.push_back(std::move(m));
  } else if (key == "lock") {
    parse_lock(f, fi);
  }
}

namespace {

struct Mount {
  unsigned major = 0, minor = 0;
  std::string root, point;
};

std::string unescape(std::string_view s) {  // mountinfo's \040 for a blank, etc.
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      out += static_cast<char>(num(s.substr(i + 1, 3), 8));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<Mount> read_mounts(pid_t pid) {
  std::vector<Mount> out;
  std::string text = read_file("/proc/" + std::to_string(pid) + "/mountinfo");
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    std::vector<std::string_view> f;
    for (size_t i = 0; i < line.size();) {
      size_t j = line.find(' ', i);
      if (j == std::string_view::npos) j = line.size();
      f.push_back(line.substr(i, j - i));
      i = j + 1;
    }
    if (f.size() < 5) continue;
    auto colon = f[2].find(':');
    if (colon == std::string_view::npos) continue;
    Mount m;
    m.major = static_cast<unsigned>(num(f[2].substr(0, colon)));
    m.minor = static_cast<unsigned>(num(f[2].substr(colon + 1)));
    m.root = unescape(f[3]);
    m.point = unescape(f[4]);
    out.push_back(std::move(m));
  }
  return out;
}

// Opens the file of handle `fh` on the filesystem mounted at `point` and
// reads its path, in a child process: open_by_handle_at needs a mount fd
// that is not O_PATH (or the cwd), and opening a directory, unlike chdir,
// would queue IN_OPEN for the job's own watches. Empty, *err set, on failure.
std::string path_by_handle(const std::string& point, file_handle* fh, int* err) {
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC) < 0) throw SysError("pipe2", errno);
  ScopedFd r(ends[0]), w(ends[1]);
  pid_t child = ::fork();
  if (child < 0) throw SysError("fork", errno);
  if (child == 0) {
    char buf[4096 + sizeof(int)] = {};
    int e = 0;
    ssize_t len = 0;
    if (::chdir(point.c_str()) < 0) {
      e = errno;
    } else {
      int f = ::open_by_handle_at(AT_FDCWD, fh, O_PATH | O_CLOEXEC);
      if (f < 0) {
        e = errno;
      } else {
        char link[32] = "/proc/self/fd/";
        char digits[12];
        int n = 0;
        for (int v = f; n == 0 || v; v /= 10) digits[n++] = static_cast<char>('0' + v % 10);
        size_t at = 14;
        while (n) link[at++] = digits[--n];
        len = ::readlink(link, buf + sizeof(int), 4096);
        if (len < 0) e = errno, len = 0;
      }
    }
    std::memcpy(buf, &e, sizeof e);
    ssize_t wr = ::write(w.get(), buf, sizeof(int) + static_cast<size_t>(len));
    ::_exit(wr < 0);
  }
  w.reset();
  std::string got;
  char chunk[4096];
  ssize_t n;
  while ((n = ::read(r.get(), chunk, sizeof chunk)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) got.append(chunk, static_cast<size_t>(n));
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {}
  if (got.size() < sizeof(int)) {
    *err = EIO;
    return {};
  }
  std::memcpy(err, got.data(), sizeof(int));
  return *err ? std::string() : got.substr(sizeof(int));
}

// The path of the file an inotify watch is on, found by its handle from a
// mount of its filesystem. Empty, with *why set, when it has none.
std::string watch_path(const FdInfo::InotifyMark& w, const std::vector<Mount>& mounts,
                       std::string* why) {
  unsigned maj = w.sdev >> 20, min = w.sdev & 0xfffff;
  *why = "no mount of its filesystem (device " + std::to_string(maj) + ":" + std::to_string(min) + ")";
  if (w.handle.empty()) {
    *why = "its filesystem gives no file handle";
    return {};
  }
  std::vector<uint8_t> buf(sizeof(file_handle) + w.handle.size());
  auto* fh = reinterpret_cast<file_handle*>(buf.data());
  fh->handle_bytes = static_cast<unsigned>(w.handle.size());
  fh->handle_type = w.handle_type;
  std::copy(w.handle.begin(), w.handle.end(), buf.begin() + sizeof(file_handle));
  for (int pass = 0; pass < 2; pass++)  // mounts of the whole filesystem first
    for (const auto& m : mounts) {
      if (m.major != maj || m.minor != min || (m.root == "/") != (pass == 0)) continue;
      int err = 0;
      std::string path = path_by_handle(m.point, fh, &err);
      if (path.empty()) {
        *why = fmt::format("open_by_handle_at: {}{}", std::strerror(err),
                           err == EPERM ? " (needs CAP_DAC_READ_SEARCH)" : "");
        continue;
      }
      struct stat st {};
      if (::lstat(path.c_str(), &st) != 0 || st.st_ino != w.ino || major(st.st_dev) != maj ||
          minor(st.st_dev) != min) {
        *why = "it was deleted or moved out of reach (" + path + ")";
        continue;
      }
      return path;
    }
  return {};
}

// An fd on a namespace (nsfs: "net:[4026531840]"): one of the process's
// own namespaces comes back (restore opens that namespace by its inode,
// and refuses when it runs elsewhere); another one is refused here.
void namespace_fd(pid_t pid, image::FileDesc& fd) {
  const std::string& link = fd.path;
  auto colon = link.find(":[");
  if (fd.type != image::FdType::Regular || colon == std::string::npos || !link.ends_with("]") ||
      link.find('/') != std::string::npos)
    return;
  std::string kind = link.substr(0, colon);
  struct stat own {};
  std::string mine = fmt::format("/proc/{}/ns/{}", pid, kind);
  if (::stat(mine.c_str(), &own) == 0 && own.st_ino == fd.inode) return;
  throw Error(fmt::format("pid {} fd {} ({}) is a namespace other than the process's own {} "
                          "namespace",
                          pid, fd.fd, link, kind),
              "snap restores fds on a process's own namespaces only; close this one before the "
              "dump");
}

}  // namespace

void fill_fd_state(pid_t pid, image::FileDesc& fd, const FdInfo& info) {
  auto name = [&](const char* what) { return fmt::format("pid {} fd {} ({})", pid, fd.fd, what); };
  namespace_fd(pid, fd);
  if (!info.unsupported_lock.empty())
    throw Error(name(fd.path.c_str()) + " holds a lock snap cannot take again: " +
                    info.unsupported_lock,
                "snap restores POSIX, OFD and flock locks and active leases; wait until the "
                "lease break is over");
  fd.locks = info.locks;
  // Restore refuses an anonymous-inode fd of a kind it does not know
  // (fanotify, userfaultfd, io_uring, perf_event, bpf...): say so now,
  // before a --kill ends a job whose image could not be restored.
  if (fd.type == image::FdType::Other && fd.path.starts_with("anon_inode:"))
    throw Error(name(fd.path.c_str()) + ": snap cannot restore this kind of file",
                "snap restores eventfd, epoll, signalfd, timerfd, inotify and pidfd fds; close "
                "this one before the dump");
  if (fd.type == image::FdType::SignalFd) fd.signalfd_mask = info.sigmask.value_or(0);
  if (fd.type == image::FdType::PidFd) {
    int32_t target = info.pidfd_pid.value_or(0);
    if (target <= 0)
      throw Error(name("pidfd") + (target < 0 ? " refers to a process that has exited"
                                              : " refers to a process outside snap's pid namespace"),
                  "snap restores pidfds of live processes of the dumped tree");
    fd.pidfd_pid = target;
  }
  if (fd.type == image::FdType::TimerFd) {
    if (!info.timerfd) throw Error(name("timerfd") + ": fdinfo shows no timer");
    fd.timerfd = info.timerfd;
  }
  if (fd.type == image::FdType::Inotify && !info.inotify.empty()) {
    auto mounts = read_mounts(pid);
    for (const auto& w : info.inotify) {
      // A file no path leads to may be a deleted one the job holds: its
      // ghost is looked for once every fd is known (collect_ghost_files).
      image::InotifyWatch iw;
      iw.wd = w.wd;
      iw.mask = w.mask;
      iw.dev = makedev(w.sdev >> 20, w.sdev & 0xfffff);
      iw.inode = w.ino;
      iw.path = watch_path(w, mounts, &iw.unfound);
      if (!iw.path.empty()) iw.unfound.clear();
      fd.inotify_watches.push_back(std::move(iw));
    }
    std::sort(fd.inotify_watches.begin(), fd.inotify_watches.end(),
              [](const auto& a, const auto& b) { return a.wd < b.wd; });
  }
}

void read_fd_owner(int copy, image::FileDesc& fd) {
  using T = image::FdType;
  if (fd.type != T::Regular && fd.type != T::Directory && fd.type != T::Pipe &&
      fd.type != T::Fifo && fd.type != T::Socket && fd.type != T::Tty && fd.type != T::CharDev)
    return;
  if (fd.type == T::Pipe || fd.type == T::Fifo) {
    int size = ::fcntl(copy, F_GETPIPE_SZ);
    if (size > 0) fd.pipe_size = static_cast<uint32_t>(size);
  }
  f_owner_ex own{};
  if (::fcntl(copy, F_GETOWN_EX, &own) < 0) return;
  int sig = ::fcntl(copy, F_GETSIG);
  if (own.pid == 0 && sig <= 0) return;
  image::FileOwner o;
  o.type = own.type;
  o.pid = own.pid;
  o.signum = sig > 0 ? sig : 0;
  uint32_t uids[2] = {0, 0};
  if (own.pid && ::fcntl(copy, F_GETOWNER_UIDS, uids) == 0) {
    o.uid = uids[0];
    o.euid = uids[1];
  }
  fd.owner = o;
}

}  // namespace snap::proc
