// File descriptors of a restored process: planned and checked in snap
// (before anything is created), installed inside the skeleton child.
#pragma once

#include <string>
#include <vector>

#include "image/checkpoint.h"

namespace snap::restore {

struct FdAction {
  enum Kind {
    kOpen,     // open(path, flags) and seek to pos
    kInherit,  // take snap restore's own fd `inherit` (the job's stdio)
    kPipe,     // one end of a pipe recreated inside the process (pipe_group)
    kEventFd,  // a fresh eventfd
    kOrphanPipe,  // a pipe end whose peer was outside the image: peer closed
  };
  Kind kind = kOpen;
  int target = -1;  // fd number in the restored process
  std::string path;
  int flags = 0;
  unsigned long long pos = 0;
  int inherit = -1;
  int pipe_group = -1;  // kPipe: which pipe; ends are told apart by flags
  bool read_end = false;
  bool cloexec = false;
  std::vector<uint8_t> pipe_data;  // kPipe write end: unread data to put back
};

struct FdPlan {
  std::vector<FdAction> actions;
  int pipe_groups = 0;
  std::vector<std::string> warnings;
};

// Decides how each saved fd comes back. Regular files must exist and be at
// least as long as the saved offset, unless allow_changed_files (then only
// a warning). Throws Error naming the fd and file otherwise.
FdPlan plan_fds(const image::Process& p, bool allow_changed_files);

// In the child (a fork of snap, before it is traced): installs the plan's
// fds at their numbers and closes every other fd except `keep_fd`, which
// is moved above them; returns its new number, or -1 with *err set.
// Uses only plain system calls.
int install_fds(const FdPlan& plan, int keep_fd, std::string* err);

}  // namespace snap::restore
