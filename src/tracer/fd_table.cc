#include "tracer/fd_table.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <exception>
#include <string>
#include <thread>

#include <fmt/core.h>

#include "base/cpus.h"
#include "base/error.h"
#include "base/scoped_fd.h"
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
};

// Fills `fd` (its number set) from the table; false if the process closed
// it meanwhile (only possible if not all its threads are stopped). Epoll
// watches go to `watched`, for fd number `index` of the table.
bool read_fd(const Table& t, size_t index, image::FileDesc& fd, std::vector<Watched>& watched) {
  char name[16];
  *std::to_chars(name, name + sizeof name - 1, fd.fd).ptr = '\0';
  char target[4096];
  ssize_t len = ::readlinkat(t.fd_dir, name, target, sizeof target - 1);
  if (len < 0) return false;
  fd.path.assign(target, static_cast<size_t>(len));
  // snap's own copy of the fd (pidfd_getfd, Linux 5.6): fstat and fcntl on
  // it cost no path lookup in /proc.
  ScopedFd copy;
  if (t.pidfd >= 0) {
    copy.reset(static_cast<int>(::syscall(SYS_pidfd_getfd, t.pidfd, fd.fd, 0)));
    if (!copy && errno == EBADF) return false;
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
  int err;
  std::string text = read_file_at(t.info_dir, name, &err);
  if (err == ENOENT) return false;
  if (err) throw SysError("read " + t.info_dir_path + "/" + name, err);
  auto info = parse_fdinfo(text);
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
  if (copy) read_fd_owner(copy.get(), fd);  // before Linux 5.6: owners, pipe sizes not recorded
  return true;
}

// Reader threads for a table of `n` fds: one per CPU snap may use, at most
// 4, and one per 1,000 fds (each fd costs ~10 system calls, ~25 us).
unsigned reader_threads(size_t n) {
  return static_cast<unsigned>(std::clamp<size_t>(n / 1000, 1, std::min(usable_cpus(), 4u)));
}

}  // namespace

std::vector<image::FileDesc> read_fds(pid_t pid) {
  Table t{pid, -1, -1, -1, "/proc/" + std::to_string(pid) + "/fdinfo"};
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

  // The fds, each filled in place by one of the threads (fd i by thread
  // i % threads); an error stops them all, the lowest fd's is reported.
  std::vector<image::FileDesc> out(nums.size());
  std::vector<char> open(nums.size(), 0);
  const unsigned nthreads = reader_threads(nums.size());
  std::vector<std::vector<Watched>> watched(nthreads);
  std::vector<std::pair<size_t, std::exception_ptr>> errors(nthreads, {SIZE_MAX, nullptr});
  std::atomic<bool> failed{false};
  auto work = [&](unsigned k) {
    for (size_t i = k; i < nums.size() && !failed.load(std::memory_order_relaxed); i += nthreads) {
      try {
        out[i].fd = nums[i];
        open[i] = read_fd(t, i, out[i], watched[k]);
      } catch (...) {
        errors[k] = {i, std::current_exception()};
        failed = true;
        return;
      }
    }
  };
  {
    std::vector<std::jthread> helpers;
    for (unsigned k = 1; k < nthreads; k++) helpers.emplace_back(work, k);
    work(0);
  }
  auto first = std::min_element(errors.begin(), errors.end(),
                                [](const auto& a, const auto& b) { return a.first < b.first; });
  if (first->second) std::rethrow_exception(first->second);

  // Fds closed meanwhile leave the list (the watches' indexes follow).
  std::vector<size_t> moved_to(nums.size());
  size_t kept = 0;
  for (size_t i = 0; i < nums.size(); i++) {
    if (!open[i]) continue;
    if (kept != i) out[kept] = std::move(out[i]);
    moved_to[i] = kept++;
  }
  out.resize(kept);
  std::vector<Watched> all;
  for (auto& w : watched)
    for (auto& x : w) all.push_back({moved_to[x.epoll_index], x.target_index, x.nth, x.inode});
  std::sort(all.begin(), all.end(), [](const Watched& a, const Watched& b) {
    return std::pair(a.epoll_index, a.target_index) < std::pair(b.epoll_index, b.target_index);
  });
  resolve_epoll_targets(pid, out, all);
  return out;
}

}  // namespace snap::proc
