#include "base/change_watch.h"

#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace snap {

int ChangeWatch::add(int fd) {
  if (!inotify_) inotify_.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!inotify_) return -1;
  const std::string self = "/proc/self/fd/" + std::to_string(fd);
  return ::inotify_add_watch(inotify_.get(), self.c_str(), IN_MODIFY);
}

bool ChangeWatch::changed(int id) {
  if (inotify_) {
    alignas(inotify_event) char buf[4096];
    for (ssize_t n; (n = ::read(inotify_.get(), buf, sizeof buf)) > 0;)
      for (ssize_t off = 0; off < n;) {
        const auto* e = reinterpret_cast<const inotify_event*>(buf + off);
        if (e->mask & IN_Q_OVERFLOW) overflowed_ = true;
        else seen_.insert(e->wd);
        off += static_cast<ssize_t>(sizeof *e + e->len);
      }
  }
  return overflowed_ || seen_.count(id) > 0;
}

}  // namespace snap
