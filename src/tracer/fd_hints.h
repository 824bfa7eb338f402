// Fds without reading each one whole while the job is stopped.
//
// Reading an fd whole (its link, snap's copy of it, fstat, fdinfo, owner)
// takes ~10 system calls: 10,000 fds held the job 0.15 s. Most fds of a big
// table are files, directories and devices whose every recorded field but
// the offset, the status flags, close-on-exec and the locks is fixed for
// the life of the open file description. So a leave-running dump reads the
// fd tables just before it stops the job (hints), and keeps its copies of
// those fds (pidfd_getfd: each shares the job's open file description).
// While the job is stopped, an fd whose hint is such a file costs four
// system calls: kcmp, that the job's fd is still the description of snap's
// copy, and the offset, flags, size and link count through the copy (a
// file deleted since the hint is read whole: a deleted file). A file that
// is or was locked (its hint's fdinfo, /proc/locks now), a device, or an fd
// without a copy reads its fdinfo instead (offset, flags, locks), and must
// be on the hint's inode and mount. Anything else is read whole. Once the
// job runs again, each fd that took its hint is checked against the
// copy-on-write snapshot, whose fd table is the job's at the moment of its
// fork, for what was not read: close-on-exec, the owner (F_SETOWN), and for
// one read from its fdinfo the size and that the file still has a name
// (deleted now, it may have been deleted before the stop and cannot be
// reopened by its path: the dump fails). A file renamed between the hint
// and the stop keeps the name it had at the hint.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <vector>

#include "base/fd_limit.h"
#include "base/scoped_fd.h"
#include "image/checkpoint.h"

namespace snap::proc {

class FdHints {
 public:
  struct Hint {
    image::FileDesc fd;
    ScopedFd copy;  // snap's copy of it (pidfd_getfd), or none
    bool stat_at_stop = false;  // its name and size read while the job was stopped
  };

  FdHints() = default;
  // The fds of each of `pids` (a job's tree, list_tree), read now (while
  // they run), with copies of them while snap's fd limit (raised to its
  // hard limit meanwhile) leaves room for them. A process that appears
  // later has no hints.
  static FdHints read(const std::vector<pid_t>& pids);
  // Whether `f` is a file whose recorded fields, but offset, flags and
  // locks, its open file description fixes: a regular file, directory or
  // device other than a terminal, reached by a path, not deleted, with no
  // owner.
  static bool can_hint(const image::FileDesc& f);

  // The hint for fd `fd` of `pid`, or null. Its user may move its `fd`
  // away (a hint serves once); threads may look up different fds at once.
  Hint* find(pid_t pid, int fd);
  // The fds of `pid` read from their hints (read_fds says), by number.
  void set_applied(pid_t pid, std::vector<int> fds) { applied_[pid] = std::move(fds); }
  const std::vector<int>& applied(pid_t pid) const;
  size_t size() const;

  // The inodes /proc/locks shows a lock, lease or waiter on, read at the
  // first call (once the job is stopped: read_fds asks it then; a hinted
  // fd whose file is locked now is read whole) and kept for the dump's
  // other processes, stopped at the same time.
  const std::vector<uint64_t>& locked_inodes();

  // Checks the fds of process `pid` that took their hints against process
  // `source`, whose fd table is that of `pid` when it was stopped (its
  // copy-on-write snapshot, or `pid` itself still stopped): each gets the
  // close-on-exec, owner and size found there. Throws Error naming pid and
  // fd for one whose file has been deleted.
  void confirm(pid_t pid, std::vector<image::FileDesc>& fds, pid_t source) const;

 private:
  const Hint* lookup(pid_t pid, int fd) const;

  RaisedFdLimit limit_;  // declared first: put back after the copies are closed
  std::map<pid_t, std::vector<Hint>> by_pid_;  // sorted by fd
  std::map<pid_t, std::vector<int>> applied_;
  std::optional<std::vector<uint64_t>> locked_;
};

}  // namespace snap::proc
