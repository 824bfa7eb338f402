#include "tracer/fd_hints.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <exception>
#include <string>

#include <fmt/core.h>

#include "base/error.h"
#include "base/parallel.h"
#include "base/scoped_fd.h"
#include "tracer/fd_state.h"
#include "tracer/fd_table.h"
#include "tracer/proc.h"

namespace snap::proc {

namespace {
constexpr std::string_view kDeleted = " (deleted)";
}  // namespace

FdHints FdHints::read(const std::vector<pid_t>& pids) {
  constexpr size_t kSpare = 256;  // fds snap keeps free for everything else
  FdHints hints;
  hints.limit_ = RaisedFdLimit::raise();
  const size_t open = open_fd_count();
  size_t room = hints.limit_.limit() > open + kSpare ? hints.limit_.limit() - open - kSpare : 0;
  for (pid_t pid : pids) {
    try {
      std::vector<ScopedFd> copies;
      auto fds = read_fds_keeping_copies(pid, room, copies);
      auto& kept = hints.by_pid_[pid];
      for (size_t i = 0; i < fds.size(); i++) {
        if (!can_hint(fds[i])) continue;
        ScopedFd copy = i < copies.size() ? std::move(copies[i]) : ScopedFd();
        if (copy) room--;
        kept.push_back({std::move(fds[i]), std::move(copy)});
      }
      std::sort(kept.begin(), kept.end(),
                [](const Hint& a, const Hint& b) { return a.fd.fd < b.fd.fd; });
    } catch (const std::exception&) {
      // Gone, or an fd the dump itself will refuse with its reason.
    }
  }
  return hints;
}

bool FdHints::can_hint(const image::FileDesc& f) {
  using T = image::FdType;
  return (f.type == T::Regular || f.type == T::Directory || f.type == T::CharDev) &&
         f.path.starts_with('/') && !f.path.ends_with(kDeleted) && !f.owner && f.ghost == 0 &&
         !f.pty;
}

const FdHints::Hint* FdHints::lookup(pid_t pid, int fd) const {
  auto p = by_pid_.find(pid);
  if (p == by_pid_.end()) return nullptr;
  auto it = std::lower_bound(p->second.begin(), p->second.end(), fd,
                             [](const Hint& h, int n) { return h.fd.fd < n; });
  return it != p->second.end() && it->fd.fd == fd ? &*it : nullptr;
}

FdHints::Hint* FdHints::find(pid_t pid, int fd) { return const_cast<Hint*>(lookup(pid, fd)); }

const std::vector<int>& FdHints::applied(pid_t pid) const {
  static const std::vector<int> kNone;
  auto it = applied_.find(pid);
  return it == applied_.end() ? kNone : it->second;
}

size_t FdHints::size() const {
  size_t n = 0;
  for (const auto& [pid, hints] : by_pid_) n += hints.size();
  return n;
}

void FdHints::confirm(pid_t pid, std::vector<image::FileDesc>& fds, pid_t source) const {
  const std::vector<int>& hinted = applied(pid);
  if (hinted.empty()) return;
  const std::string dir = fmt::format("/proc/{}/fd", source), info_dir = dir + "info";
  ScopedFd fd_dir(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd_dir) throw SysError("open " + dir, errno);
  ScopedFd info_fd(::open(info_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!info_fd) throw SysError("open " + info_dir, errno);
  ScopedFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, source, 0)));
  if (!pidfd && errno != ENOSYS) throw SysError(fmt::format("pidfd_open(pid {})", source), errno);
  std::vector<std::pair<image::FileDesc*, const Hint*>> todo;
  for (auto& f : fds)
    if (std::binary_search(hinted.begin(), hinted.end(), f.fd))
      todo.push_back({&f, lookup(pid, f.fd)});
  auto check = [&](size_t i) {
    image::FileDesc& fd = *todo[i].first;
    char name[16];
    *std::to_chars(name, name + sizeof name - 1, fd.fd).ptr = '\0';
    int err;
    auto info = parse_fdinfo(read_file_at(info_fd.get(), name, &err));
    if (err) throw SysError(fmt::format("read {}/{}", info_dir, name), err);
    fd.flags = (fd.flags & ~O_CLOEXEC) | (info.flags & O_CLOEXEC);
    // The rest through a copy of the fd: snap's own where it was found to
    // be the job's open file description while the job was stopped.
    const Hint* h = todo[i].second;
    ScopedFd fresh;
    int copy = h && h->copy ? h->copy.get() : -1;
    if (copy < 0 && pidfd) {
      fresh.reset(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), fd.fd, 0)));
      if (!fresh && errno != ENOSYS)
        throw SysError(fmt::format("pidfd_getfd(pid {}, fd {})", source, fd.fd), errno);
      copy = fresh.get();
    }
    // A name and size not read at the stop (an fd read from its fdinfo): a
    // file deleted now may have been deleted before the stop, and could not
    // be opened again by its path.
    if (!h || !h->stat_at_stop) {
      struct stat st {};
      if (copy >= 0 ? ::fstat(copy, &st) != 0 : ::fstatat(fd_dir.get(), name, &st, 0) != 0)
        throw SysError(fmt::format("pid {} fd {} ({}): fstat", pid, fd.fd, fd.path), errno);
      if (st.st_nlink == 0)
        throw Error(fmt::format("pid {} fd {} ({}): the file was deleted while snap read the "
                                "job's fds",
                                pid, fd.fd, fd.path),
                    "dump again");
      if (fd.type == image::FdType::Regular) fd.size = static_cast<uint64_t>(st.st_size);
    }
    if (copy >= 0) read_fd_owner(copy, fd);  // before Linux 5.6: the hint's
  };
  parallel_for(todo.size(), fd_reader_threads(todo.size()), check);
}

const std::vector<uint64_t>& FdHints::locked_inodes() {
  if (!locked_) {
    auto text = try_read_file("/proc/locks");
    locked_ = text ? parse_locked_inodes(*text) : std::vector<uint64_t>{};
  }
  return *locked_;
}

}  // namespace snap::proc
