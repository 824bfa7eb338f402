// Pseudo-terminals of a restored tree (image::Pty): each pair whose master
// the job held is made again in snap, before the skeletons, with its
// settings, its slave node's owner and its queued data; its fds are open
// file descriptions of it that the skeletons inherit. The session leader
// takes the slave as its controlling terminal and the foreground group's
// leader makes its group the foreground one, each in its skeleton
// (take_terminal). A pty whose master had been closed comes back hung up.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"

namespace snap::restore {

class PtyTable {
 public:
  // Moves an fd snap made above every target fd, and holds it until the
  // skeletons have theirs; returns its new number. Throws Error.
  using Keep = std::function<int(int fd, const std::string& what)>;

  // Makes every pty of the image. Throws Error naming the pty when one
  // cannot come back as it was; adds to `warnings` what comes back
  // otherwise (a foreground group whose leader had exited).
  PtyTable(const image::Checkpoint& ckpt, Keep keep, std::vector<std::string>& warnings);

  // An fd of type Tty with FileDesc::pty: the master, or a new open file
  // description of the slave. Throws Error naming `what`.
  int open_end(const image::FileDesc& f, const std::string& what);
  // /dev/tty, naming the controlling terminal of p's session: opened by
  // the skeleton itself, once the pty is its terminal again.
  bool opened_by_skeleton(const image::Process& p, const image::FileDesc& f) const;
  // Snap's fds of the slave p takes as controlling terminal and makes its
  // group the foreground of (ProcessFiles::ctty_fd, fg_fd); -1: none.
  int ctty_of(const image::Process& p) const;
  int foreground_of(const image::Process& p) const;
  // Once every fd is open: closes the masters that had been closed, which
  // hangs up their slaves.
  void hang_up();

 private:
  struct Made {
    const image::Pty* pty = nullptr;
    int master = -1, slave = -1;  // kept by snap
    ScopedFd closing_master;      // hung_up: until hang_up()
  };
  Made& find(uint32_t index, const std::string& what);

  Keep keep_;
  std::map<uint32_t, Made> made_;
  std::set<uint32_t> masters_used_;
};

// In a skeleton: the session leader makes `ctty_fd`'s terminal its
// controlling terminal (TIOCSCTTY) and, with fg_fd >= 0, a process makes
// its group the foreground group of that terminal (TIOCSPGRP). Empty, or
// what failed. Only plain system calls.
std::string take_terminal(int ctty_fd, int fg_fd);

}  // namespace snap::restore
