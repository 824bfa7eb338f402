#include "base/fd_limit.h"

#include <dirent.h>

#include <algorithm>
#include <limits>

namespace snap {

RaisedFdLimit::RaisedFdLimit() {
  struct rlimit r {};
  if (::getrlimit(RLIMIT_NOFILE, &r) == 0)
    limit_ = static_cast<size_t>(std::min<rlim_t>(r.rlim_cur, std::numeric_limits<int>::max()));
}

RaisedFdLimit RaisedFdLimit::raise() {
  RaisedFdLimit out;
  struct rlimit r {};
  if (::getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur >= r.rlim_max) return out;
  const rlim_t old = r.rlim_cur;
  r.rlim_cur = r.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &r) != 0) return out;
  out.old_ = old;
  out.raised_ = true;
  out.limit_ = static_cast<size_t>(std::min<rlim_t>(r.rlim_max, std::numeric_limits<int>::max()));
  return out;
}

void RaisedFdLimit::restore() {
  if (!std::exchange(raised_, false)) return;
  struct rlimit r {};
  if (::getrlimit(RLIMIT_NOFILE, &r) != 0) return;
  r.rlim_cur = old_;
  ::setrlimit(RLIMIT_NOFILE, &r);
}

size_t open_fd_count() {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return 0;
  size_t n = 0;
  while (auto* e = ::readdir(d))
    if (e->d_name[0] != '.') n++;
  ::closedir(d);
  return n > 0 ? n - 1 : 0;  // not the directory's own fd
}

}  // namespace snap
