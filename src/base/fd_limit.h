// snap's own limit on open files, raised for a while.
#pragma once

#include <sys/resource.h>

#include <cstddef>
#include <utility>

namespace snap {

// Raises this process's soft RLIMIT_NOFILE to its hard limit for the
// object's life and puts it back after (processes snap starts meanwhile
// inherit the raised one, so hold it briefly).
class RaisedFdLimit {
 public:
  RaisedFdLimit();  // not raised: limit() is the soft limit as it is
  static RaisedFdLimit raise();
  RaisedFdLimit(RaisedFdLimit&& o) noexcept
      : old_(o.old_), limit_(o.limit_), raised_(std::exchange(o.raised_, false)) {}
  RaisedFdLimit& operator=(RaisedFdLimit&& o) noexcept {
    if (this != &o) {
      restore();
      old_ = o.old_;
      limit_ = o.limit_;
      raised_ = std::exchange(o.raised_, false);
    }
    return *this;
  }
  RaisedFdLimit(const RaisedFdLimit&) = delete;
  RaisedFdLimit& operator=(const RaisedFdLimit&) = delete;
  ~RaisedFdLimit() { restore(); }

  // The soft limit now.
  size_t limit() const { return limit_; }

 private:
  void restore();
  rlim_t old_ = 0;
  size_t limit_ = 0;
  bool raised_ = false;
};

// How many fds this process has open now (/proc/self/fd).
size_t open_fd_count();

}  // namespace snap
