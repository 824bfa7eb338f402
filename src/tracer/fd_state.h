// The state of anonymous-inode fds (signalfd, timerfd, inotify), the locks
// held through an fd and an open file's owner (F_SETOWN), read at dump
// time from /proc/PID/fdinfo and from the fd itself (pidfd_getfd).
#pragma once

#include <sys/types.h>

#include <string_view>
#include <vector>

#include "image/checkpoint.h"
#include "tracer/proc.h"

namespace snap::proc {

// One "key: fields" line of /proc/PID/fdinfo/N that parse_fdinfo does not
// know itself: signalfd's sigmask, timerfd's clock and times, inotify's
// watches and the "lock:" lines. Other keys are ignored.
void parse_fd_state_line(std::string_view key, const std::vector<std::string_view>& f,
                         FdInfo& fi);

// Copies what parse_fd_state_line read into `fd`, finding the path of each
// inotify watch by its file handle. Throws Error naming pid and fd for
// what a restore could not bring back: a lease being broken, a watched
// file that has no path any more.
void fill_fd_state(pid_t pid, image::FileDesc& fd, const FdInfo& info);

// Records the owner (F_GETOWN_EX, F_GETSIG, F_GETOWNER_UIDS) of `fd`, if it
// has one, and the capacity of a pipe or FIFO (F_GETPIPE_SZ), read through
// `copy`, snap's copy of the fd (pidfd_getfd).
void read_fd_owner(int copy, image::FileDesc& fd);

}  // namespace snap::proc
