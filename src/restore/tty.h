// Pseudo-terminals of a restored tree (image::Pty): each pair whose master
// the job held is made again in snap, before the skeletons, with its
// settings and queued data; its fds are open file descriptions of it that
// the skeletons inherit. The session leader takes the slave as its
// controlling terminal and the foreground group's leader makes its group
// the foreground one, each in its skeleton (take_terminal).
#pragma once

#include <string>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"

namespace snap::restore {

struct PtyPair {
  ScopedFd master, slave;  // slave: opened with O_NOCTTY, O_RDWR
};

// A new pty (/dev/ptmx; the index may differ from t.index) with t's queued
// data, termios, window size, packet mode and lock. Throws Error naming it.
PtyPair make_pty(const image::Pty& t);

// Another open file description of the slave of `master`, with the saved
// fd's flags (never making it a controlling terminal). Throws Error.
ScopedFd open_pty_slave(int master, int flags, const std::string& what);

// In a skeleton: the session leader makes `ctty_fd`'s terminal its
// controlling terminal (TIOCSCTTY) and, with fg_fd >= 0, a process makes
// its group the foreground group of that terminal (TIOCSPGRP). Empty, or
// what failed. Only plain system calls.
std::string take_terminal(int ctty_fd, int fg_fd);

}  // namespace snap::restore
