// Files snap holds open and must know changed other than through a
// mapping: write(2), truncation, fallocate (and MADV_REMOVE, which punches
// a hole in the mapped file): one inotify IN_MODIFY watch on each.
#pragma once

#include <set>

#include "base/scoped_fd.h"

namespace snap {

class ChangeWatch {
 public:
  // Watches the file open on `fd`: the watch's id, or -1 with errno set.
  int add(int fd);
  // Whether the watch `id` saw a change since it was added (any did when
  // the queue overflowed). Reads what is queued first.
  bool changed(int id);

 private:
  ScopedFd inotify_;
  std::set<int> seen_;
  bool overflowed_ = false;
};

}  // namespace snap
