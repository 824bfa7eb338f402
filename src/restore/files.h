// The open files of a restored tree. Every open file description of the
// image is created once, in snap, before the first skeleton is forked:
// files opened at their offset, pipes and unix socket pairs with their
// unread data, eventfds, each shared memory object as a memfd filled
// with its pages, and each deleted file or memfd made again
// (restore/ghosts.h), which its fds reopen and its mappings map. The skeletons inherit all of them through fork(), and
// each puts its own at their numbers and closes the rest. So what several
// fds or processes shared (an offset, a pipe, a socket pair, memory) is one
// kernel object again, as it was.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"
#include "image/image_reader.h"
#include "restore/fill.h"

namespace snap::restore {

struct FdAction {
  int target = -1;   // fd number in the restored process
  // Shared descriptions (and pipes, sockets): snap's fd of the object,
  // inherited by the skeleton. -1: a file only this fd opened, which the
  // skeleton opens itself (so snap never holds 10,000 of a job's files).
  int source = -1;
  bool cloexec = false;
  std::string path;   // source -1: open(path, flags) at pos, an eventfd or an epoll
  int flags = 0;
  uint64_t pos = 0;
  bool eventfd = false;
  uint64_t eventfd_count = 0;
  bool eventfd_semaphore = false;
  bool epoll = false;
  bool anon = false;  // a signalfd, timerfd or inotify fd (restore/anon_fds.h)
  // A /proc file of a thread that is not its process's leader (restore/
  // thread_proc_files.h): the pid of that thread's process. /dev/null holds
  // the number until the process opens `path` itself, once the rebuild has
  // made that thread. 0: none.
  pid_t thread_of = 0;
  // The saved fd: its anon state, locks and owner (set once it is in place).
  const image::FileDesc* file = nullptr;
  // An epoll (own or inherited): the fds it watches, registered once every
  // fd of the process is in place (a shared epoll: by each holder; EEXIST
  // from the second is expected).
  std::vector<image::EpollTarget> epoll_targets;
};

// Shared memory objects (image::is_shm_object) by (dev, inode).
using ShmKey = std::pair<uint64_t, uint64_t>;
using image::is_shm_object;
ShmKey shm_key(const image::Mapping& m);

struct ProcessFiles {
  std::vector<FdAction> fds;
  std::map<ShmKey, int> shm;  // memfd (inherited) for each shared memory object it maps
  // The remade deleted file or memfd (inherited) of each image::GhostFile
  // it maps, by ghost id (restore/ghosts.h).
  std::map<uint64_t, int> ghosts;
  int cwd_fd = -1;  // a removed cwd: its remade directory (inherited), for fchdir
  int exe_fd = -1;  // a deleted executable: its remade file (inherited), for PR_SET_MM
  // A pty of the image (restore/tty.h), inherited: the session leader takes
  // ctty_fd's as its controlling terminal; the leader of the foreground
  // group makes its group fg_fd's foreground group. -1: none.
  int ctty_fd = -1, fg_fd = -1;
};

class OpenFiles {
 public:
  // Checks every fd and shared mapping of the image and creates their
  // objects. Throws Error naming the pid, fd and file when one cannot come
  // back faithfully: a regular file that is gone or shorter than the saved
  // offset (unless allow_changed_files: then a warning), a socket leading
  // outside the image, a kind of file restore does not know. `tcp_close`:
  // TCP connections come back closed (end of file, EPIPE) instead.
  // `fill`: the workers that write shared memory objects' pages.
  static OpenFiles create(const image::Checkpoint& ckpt, image::ImageReader& img,
                          bool allow_changed_files, bool tcp_close = false,
                          const FillOptions& fill = {});

  const ProcessFiles& of(pid_t pid) const { return procs_.at(pid); }
  const std::vector<std::string>& warnings() const { return warnings_; }
  // The lowest fd number the objects use: above every target fd.
  int base() const { return base_; }
  // Closes snap's copies (the skeletons hold theirs).
  void close_all() { owned_.clear(); }
  // Once every skeleton is in its cwd: ends the processes that held a
  // /proc/PID cwd (restore/ghosts.h), so it shows as deleted again.
  void end_holders();
  // Once the restored job runs: the files made again at paths where none
  // was (shared memory files in /dev/shm, the job's files and directories
  // in temporary directories) stay. Until then they are removed again if
  // the restore fails.
  void keep_made_files() { made_paths_.clear(); }
  // Once the processes are rebuilt, just before they run: the directories
  // made again in temporary directories get their modes and times
  // (innermost first; until then they stay writable by their owner, so
  // that everything in them can be made, and removed again on failure).
  void finish_made_directories();
  OpenFiles() = default;
  OpenFiles(OpenFiles&&) = default;
  OpenFiles& operator=(OpenFiles&&) = default;
  ~OpenFiles();

 private:
  int base_ = 3;
  std::vector<ScopedFd> owned_;
  std::map<pid_t, ProcessFiles> procs_;
  std::vector<std::string> warnings_;
  std::vector<pid_t> holders_;
  std::vector<std::string> made_paths_;
  std::vector<image::GhostFile> made_dirs_;
  friend class FilePlanner;
};

// In a skeleton (a fork of snap, before it is traced): puts `files`' fds at
// their numbers (inherited objects first, then its own files, opened at the
// lowest free number and moved into place, in ascending order) and closes
// every other fd except the memfds in files.shm and files.ghosts and `keep_fd`. Returns 0,
// or -1 with *err set. Only plain system calls.
int install_fds(const ProcessFiles& files, int keep_fd, std::string* err);

}  // namespace snap::restore
