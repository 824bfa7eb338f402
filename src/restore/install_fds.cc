// The skeleton's side of the files: each fd of the process put at its
// number, from snap's objects (inherited) or opened here, then epoll watches,
// locks and owners. Plain system calls: it runs in the skeleton.
#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fmt/core.h>
#include <set>

#include "restore/anon_fds.h"
#include "restore/files.h"

namespace snap::restore {

int install_fds(const ProcessFiles& files, int keep_fd, std::string* err) {
  auto fail = [&](const char* what, int target) {
    *err = fmt::format("fd {}: {}: {}", target, what, std::strerror(errno));
    return -1;
  };
  std::set<int> wanted{keep_fd};
  // Inherited objects: every source is above every target, so no dup3
  // overwrites a source.
  for (const auto& a : files.fds) {
    if (a.source < 0) continue;
    if (::dup3(a.source, a.target, a.cloexec ? O_CLOEXEC : 0) < 0) return fail("dup3", a.target);
    wanted.insert(a.target);
  }
  // Its own files, in ascending order: open() takes the lowest free number,
  // never one already in place, and what it takes is moved to the target.
  for (const auto& a : files.fds) {
    if (a.source >= 0) continue;
    if (a.anon) {
      std::string why;
      int fd = make_anon_fd(*a.file, &why);
      if (fd < 0) {
        *err = fmt::format("fd {}: {}", a.target, why);
        return -1;
      }
      if (fd != a.target && ::dup3(fd, a.target, a.cloexec ? O_CLOEXEC : 0) < 0)
        return fail("dup3", a.target);
      if (fd != a.target) ::close(fd);
      if (!a.cloexec) ::fcntl(a.target, F_SETFD, 0);
      wanted.insert(a.target);
      continue;
    }
    const std::string path = a.thread_of ? "/dev/null" : a.path;  // its thread comes later
    const int flags = a.thread_of ? O_RDONLY : a.flags & ~(O_CREAT | O_EXCL | O_TRUNC);
    int fd = a.eventfd ? make_eventfd(a.eventfd_count, a.eventfd_semaphore, a.flags)
             : a.epoll ? make_epoll(a.flags)
                       : ::open(path.c_str(), flags | O_CLOEXEC);
    if (fd < 0)
      return fail(a.eventfd ? "eventfd" : a.epoll ? "epoll_create1" : ("open " + path).c_str(),
                  a.target);
    if (a.pos && !a.thread_of && ::lseek(fd, static_cast<off_t>(a.pos), SEEK_SET) < 0 &&
        errno != ESPIPE)
      return fail("lseek", a.target);
    if (fd != a.target) {
      if (::dup3(fd, a.target, a.cloexec ? O_CLOEXEC : 0) < 0) return fail("dup3", a.target);
      ::close(fd);
    }
    if (!a.cloexec) ::fcntl(a.target, F_SETFD, 0);
    wanted.insert(a.target);
  }
  for (const auto& [key, fd] : files.shm) wanted.insert(fd);
  for (const auto& [id, fd] : files.ghosts) wanted.insert(fd);
  if (files.exe_fd >= 0) wanted.insert(files.exe_fd);
  int next = 0;
  for (int fd : wanted) {
    if (fd > next) ::close_range(static_cast<unsigned>(next), static_cast<unsigned>(fd - 1), 0);
    next = fd + 1;
  }
  ::close_range(static_cast<unsigned>(next), ~0u, 0);
  // Every watched fd is at its number now.
  for (const auto& a : files.fds)
    for (const auto& t : a.epoll_targets)
      if (watch_again(a.target, t, err) < 0) return -1;
  // Locks and owners last (POSIX locks later still: take_posix_locks).
  for (const auto& a : files.fds) {
    if (!a.file) continue;
    std::string why;
    if (apply_fd_state(a.target, *a.file, &why) < 0) {
      *err = fmt::format("fd {} ({}): {}", a.target, a.file->path, why);
      return -1;
    }
  }
  return 0;
}

}  // namespace snap::restore
