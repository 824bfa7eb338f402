#include "tracer/fd_table.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <string>

#include <fmt/core.h>

#include "base/cpus.h"
#include "base/error.h"
#include "base/log.h"
#include "base/parallel.h"
#include "base/scoped_fd.h"
#include "tracer/devices.h"
#include "tracer/fd_hints.h"
#include "tracer/fd_state.h"
#include "tracer/proc.h"
#include "tracer/sharing.h"

namespace snap::proc {

namespace {

image::FdType classify_fd(const std::string& link, const struct stat& st) {
  using T = image::FdType;
  if (link.starts_with("anon_inode:[eventfd")) return T::EventFd;
  if (link == "anon_inode:[eventpoll]") return T::Epoll;
  if (link == "anon_inode:[signalfd]") return T::SignalFd;
  if (link == "anon_inode:[timerfd]") return T::TimerFd;
  if (link == "anon_inode:inotify") return T::Inotify;
  if (link == "anon_inode:[pidfd]") return T::PidFd;
  if (S_ISREG(st.st_mode)) return T::Regular;
  if (S_ISDIR(st.st_mode)) return T::Directory;
  if (S_ISFIFO(st.st_mode)) return link.starts_with("pipe:") ? T::Pipe : T::Fifo;
  if (S_ISSOCK(st.st_mode)) return T::Socket;
  if (S_ISCHR(st.st_mode)) {
    unsigned maj = major(st.st_rdev);
    // 4/5: virtual consoles and /dev/tty; 136-143: pseudo-terminal slaves.
    if (maj == 4 || maj == 5 || (maj >= 136 && maj <= 143)) return T::Tty;
    return T::CharDev;
  }
  return T::Other;
}


struct Watched {
  size_t epoll_index;   // in read_fds' list
  size_t target_index;  // in that fd's epoll_targets
  int nth;              // registrations under the same number before it
  uint64_t inode;
};

// Restore registers each watched file again under the number the epoll
// knows it by. Usually that fd is still the file; when the job closed it
// (or put another file there) and holds the file under another number,
// restore borrows the number for the registration: `via` names that fd.
// An epoll whose file the process no longer holds at all is refused.
void resolve_epoll_targets(pid_t pid, std::vector<image::FileDesc>& fds,
                           const std::vector<Watched>& watched) {
  for (const auto& w : watched) {
    const image::FileDesc& ep = fds[w.epoll_index];
    image::EpollTarget& t = fds[w.epoll_index].epoll_targets[w.target_index];
    auto holds = [&](const image::FileDesc& f) {
      return f.inode == w.inode && is_epoll_target(pid, f.fd, ep.fd, t.fd, w.nth);
    };
    auto same = std::find_if(fds.begin(), fds.end(), [&](const auto& f) { return f.fd == t.fd; });
    if (same != fds.end() && holds(*same)) continue;
    auto other = std::find_if(fds.begin(), fds.end(), holds);
    if (other == fds.end())
      throw Error("pid " + std::to_string(pid) + " fd " + std::to_string(ep.fd) +
                      " (epoll) watches a file that is no longer open as fd " +
                      std::to_string(t.fd) + " (inode " + std::to_string(w.inode) +
                      ") nor as any other fd of this process",
                  "snap cannot restore an epoll watching a file only another process holds");
    t.via = other->fd;
  }
}

// What every reader thread of one fd table shares.
struct Table {
  pid_t pid;
  int pidfd;     // -1: before Linux 5.3, each fd through /proc only
  int fd_dir;    // /proc/PID/fd
  int info_dir;  // /proc/PID/fdinfo
  std::string info_dir_path;
  FdHints* hints;  // or null
  // Inodes /proc/locks shows locked now (with hints only).
  const std::vector<uint64_t>* locked;
  // Where to keep snap's copies of hintable fds (by index), or null.
  std::vector<ScopedFd>* copies;
};

enum class FdRead { kClosed, kWhole, kFromHint };

// Fills `fd` from its hint if it is still the hinted file (fd_hints.h);
// sets `closed` (and returns true) if the process closed it. Else false.
bool read_from_hint(const Table& t, const char* name, image::FileDesc& fd, bool* closed) {
  FdHints::Hint* hint = t.hints ? t.hints->find(t.pid, fd.fd) : nullptr;
  if (!hint) return false;
  const image::FileDesc& h = hint->fd;
  if (hint->copy && h.type != image::FdType::CharDev && h.locks.empty() &&
      !std::binary_search(t.locked->begin(), t.locked->end(), h.inode)) {
    // Still snap's copy's open file description: its offset and flags.
    if (::syscall(SYS_kcmp, t.pid, ::getpid(), KCMP_FILE, fd.fd, hint->copy.get()) != 0)
      return false;  // another file, or none: read whole
    // Its name and size as they are now, while the job is stopped: once it
    // runs, it may close the file and rename another over it.
    off_t pos = ::lseek(hint->copy.get(), 0, SEEK_CUR);
    int flags = ::fcntl(hint->copy.get(), F_GETFL);
    struct stat st {};
    if (pos < 0 || flags < 0 || ::fstat(hint->copy.get(), &st) != 0 || st.st_nlink == 0)
      return false;  // deleted since the hint: read whole, as a deleted file
    const int cloexec = h.flags & O_CLOEXEC;  // the fd's own: confirmed later
    fd = std::move(hint->fd);
    fd.pos = static_cast<uint64_t>(pos);
    fd.flags = (flags & ~O_CLOEXEC) | cloexec;
    if (fd.type == image::FdType::Regular) fd.size = static_cast<uint64_t>(st.st_size);
    hint->stat_at_stop = true;
    return true;
  }
  int err;
  std::string text = read_file_at(t.info_dir, name, &err);
  if (err == ENOENT) return *closed = true;
  if (err) throw SysError("read " + t.info_dir_path + "/" + name, err);
  auto info = parse_fdinfo(text);
  if (info.ino != h.inode || info.mnt_id != h.mnt_id) return false;
  hint->copy.reset();  // maybe another open file description of that file
  fd = std::move(hint->fd);
  fd.pos = info.pos;
  fd.flags = info.flags;
  fill_fd_state(t.pid, fd, info);  // its locks
  return true;
}

// Events an inotify instance holds unread are lost to a restore: inotify
// has no way to read them but to take them from the job, nor to queue one.
// The watches come back; the dump says what does not.
void say_queued_events(pid_t pid, int fd, int copy) {
  int queued = 0;
  if (::ioctl(copy, FIONREAD, &queued) == 0 && queued > 0)
    warn("pid {} fd {} (inotify): {} byte(s) of events were queued unread at the dump and are "
         "not in the image (inotify can neither show them without taking them from the job nor "
         "be given them back): a restored job finds its watches, not those events",
         pid, fd, queued);
}

// Fills `fd` (its number set) from the table, or from its hint; kClosed if
// the process closed it meanwhile (only possible if not all its threads
// are stopped). Epoll watches go to `watched`, for fd number `index` of the
// table.
FdRead read_fd(const Table& t, size_t index, image::FileDesc& fd, std::vector<Watched>& watched) {
  char name[16];
  *std::to_chars(name, name + sizeof name - 1, fd.fd).ptr = '\0';
  bool closed = false;
  if (read_from_hint(t, name, fd, &closed)) return closed ? FdRead::kClosed : FdRead::kFromHint;
  char target[4096];
  ssize_t len = ::readlinkat(t.fd_dir, name, target, sizeof target - 1);
  if (len < 0) return FdRead::kClosed;
  fd.path.assign(target, static_cast<size_t>(len));
  // snap's own copy of the fd (pidfd_getfd, Linux 5.6): fstat and fcntl on
  // it cost no path lookup in /proc.
  ScopedFd copy;
  if (t.pidfd >= 0) {
    copy.reset(static_cast<int>(::syscall(SYS_pidfd_getfd, t.pidfd, fd.fd, 0)));
    if (!copy && errno == EBADF) return FdRead::kClosed;
    if (!copy && errno != ENOSYS)
      throw SysError(fmt::format("pidfd_getfd(pid {}, fd {})", t.pid, fd.fd), errno);
  }
  struct stat st {};
  if (copy ? ::fstat(copy.get(), &st) == 0 : ::fstatat(t.fd_dir, name, &st, 0) == 0) {
    fd.mode = st.st_mode;
    fd.inode = st.st_ino;
    fd.size = static_cast<uint64_t>(st.st_size);
  }
  fd.type = classify_fd(fd.path, st);
  if (fd.type == image::FdType::CharDev) refuse_stateful_device_fd(t.pid, fd.fd, fd.path, st.st_rdev);
  // A POSIX message queue (mq_open) looks like a regular file at "/NAME",
  // which a restore would open in the root directory instead. Only such a
  // path is asked (fstatfs): not one more system call for every file.
  constexpr long kMqueueMagic = 0x19800202;  // the kernel's MQUEUE_MAGIC, not in its uapi headers
  struct statfs fs {};
  if (fd.type == image::FdType::Regular && copy && fd.path.find('/', 1) == std::string::npos &&
      ::fstatfs(copy.get(), &fs) == 0 && fs.f_type == kMqueueMagic)
    throw Error(fmt::format("pid {} fd {} ({}) is a POSIX message queue (mq_open)", t.pid, fd.fd,
                            fd.path),
                "snap cannot save message queues yet; close it (mq_close) before the dump");
  int err;
  std::string text = read_file_at(t.info_dir, name, &err);
  if (err == ENOENT) return FdRead::kClosed;
  if (err) throw SysError("read " + t.info_dir_path + "/" + name, err);
  auto info = parse_fdinfo(text);
  fd.mnt_id = info.mnt_id;
  fd.pos = info.pos;
  fd.flags = info.flags;
  if (info.ino) fd.inode = info.ino;
  fd.eventfd_count = info.eventfd_count;
  fd.eventfd_semaphore = info.eventfd_semaphore;
  for (const auto& [target_fd, ino] : info.epoll_targets) {
    int nth = static_cast<int>(std::count_if(fd.epoll_targets.begin(), fd.epoll_targets.end(),
                                             [&](const auto& e) { return e.fd == target_fd.fd; }));
    watched.push_back({index, fd.epoll_targets.size(), nth, ino});
    fd.epoll_targets.push_back(target_fd);
  }
  fill_fd_state(t.pid, fd, info);
  if (fd.type == image::FdType::Inotify && copy) say_queued_events(t.pid, fd.fd, copy.get());
  if (copy) read_fd_owner(copy.get(), fd);  // before Linux 5.6: owners, pipe sizes not recorded
  if (t.copies && FdHints::can_hint(fd)) (*t.copies)[index] = std::move(copy);
  return FdRead::kWhole;
}

}  // namespace

unsigned fd_reader_threads(size_t n) {
  return static_cast<unsigned>(std::clamp<size_t>(n / 1000, 1, std::min(usable_cpus(), 4u)));
}

namespace {

std::vector<image::FileDesc> read_table(pid_t pid, FdHints* hints, std::vector<ScopedFd>* copies,
                                        size_t max_copies) {
  Table t{pid, -1, -1, -1, "/proc/" + std::to_string(pid) + "/fdinfo", hints,
          hints ? &hints->locked_inodes() : nullptr, nullptr};
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  ScopedFd fd_dir(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ScopedFd info_dir(::open(t.info_dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd_dir) throw SysError("open " + dir, errno);
  if (!info_dir) throw SysError("open " + t.info_dir_path, errno);
  ScopedFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd && errno != ENOSYS) throw SysError(fmt::format("pidfd_open(pid {})", pid), errno);
  t.pidfd = pidfd ? pidfd.get() : -1;
  t.fd_dir = fd_dir.get();
  t.info_dir = info_dir.get();

  std::vector<int> nums;
  {
    DIR* d = ::opendir(dir.c_str());
    if (!d) throw SysError("opendir " + dir, errno);
    while (auto* e = ::readdir(d))
      if (e->d_name[0] != '.') nums.push_back(std::atoi(e->d_name));
    ::closedir(d);
  }
  std::sort(nums.begin(), nums.end());
  if (copies && nums.size() <= max_copies) {
    copies->clear();
    copies->resize(nums.size());
    t.copies = copies;
  }

  // The fds, each filled in place by one of the threads (fd i by thread
  // i % threads); an error stops them all, the lowest fd's is reported.
  std::vector<image::FileDesc> out(nums.size());
  std::vector<FdRead> got(nums.size(), FdRead::kClosed);
  const unsigned nthreads = fd_reader_threads(nums.size());
  std::vector<std::vector<Watched>> watched(nthreads);
  parallel_for(nums.size(), nthreads, [&](size_t i) {
    out[i].fd = nums[i];
    got[i] = read_fd(t, i, out[i], watched[i % nthreads]);
  });
  if (hints) {
    std::vector<int> from_hints;
    for (size_t i = 0; i < nums.size(); i++)
      if (got[i] == FdRead::kFromHint) from_hints.push_back(nums[i]);
    hints->set_applied(pid, std::move(from_hints));
  }

  // Fds closed meanwhile leave the list (the watches' indexes follow).
  std::vector<size_t> moved_to(nums.size());
  size_t kept = 0;
  for (size_t i = 0; i < nums.size(); i++) {
    if (got[i] == FdRead::kClosed) continue;
    if (kept != i) out[kept] = std::move(out[i]);
    moved_to[i] = kept++;
  }
  out.resize(kept);
  if (t.copies) {
    for (size_t i = 0; i < nums.size(); i++)
      if (got[i] != FdRead::kClosed && moved_to[i] != i)
        (*copies)[moved_to[i]] = std::move((*copies)[i]);
    copies->resize(kept);
  }
  std::vector<Watched> all;
  for (auto& w : watched)
    for (auto& x : w) all.push_back({moved_to[x.epoll_index], x.target_index, x.nth, x.inode});
  std::sort(all.begin(), all.end(), [](const Watched& a, const Watched& b) {
    return std::pair(a.epoll_index, a.target_index) < std::pair(b.epoll_index, b.target_index);
  });
  resolve_epoll_targets(pid, out, all);
  return out;
}

}  // namespace

std::vector<image::FileDesc> read_fds(pid_t pid, FdHints* hints) {
  return read_table(pid, hints, nullptr, 0);
}

std::vector<image::FileDesc> read_fds_keeping_copies(pid_t pid, size_t max_copies,
                                                     std::vector<ScopedFd>& copies) {
  copies.clear();
  return read_table(pid, nullptr, &copies, max_copies);
}

}  // namespace snap::proc
