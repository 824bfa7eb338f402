// The fd table of a stopped process: every open fd with what /proc and the
// fd itself show (path, type, offset, flags, kind-specific state).
#pragma once

#include <sys/types.h>

#include <vector>

#include "image/checkpoint.h"

namespace snap::proc {

// The fds of stopped process `pid`, by number. Each is read through snap's
// own copy of it (pidfd_getfd) and /proc/PID/fdinfo; a table of thousands
// is read by several threads (the job is stopped meanwhile). Throws Error
// naming pid and fd for what a restore could not bring back.
std::vector<image::FileDesc> read_fds(pid_t pid);

}  // namespace snap::proc
