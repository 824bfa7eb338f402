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
// inotify watch by its file handle (a watch on a file without a path gets
// its ghost later, collect_ghost_files), and the path of an fd on one of
// the process's own namespaces (/proc/self/ns/KIND). Throws Error naming
// pid and fd for what a restore could not bring back: a lease being
// broken, an fd on another namespace.
void fill_fd_state(pid_t pid, image::FileDesc& fd, const FdInfo& info);

// Records the owner (F_GETOWN_EX, F_GETSIG, F_GETOWNER_UIDS) of each fd of
// stopped process `pid` that has one, and the capacity of its pipes and
// FIFOs (F_GETPIPE_SZ), reading them through a copy of the fd (pidfd_getfd).
void read_fd_owners(pid_t pid, std::vector<image::FileDesc>& fds);

// A POSIX lock on a file the process also maps cannot come back: restore
// opens and closes mapped files inside the process, and any close drops
// its POSIX locks on that file. Throws Error naming pid, fd and file.
// Throws Error naming the pid when `p` has an AIO context (its ring shows
// as a "/[aio] (deleted)" mapping): restore cannot make it again.
void check_aio_rings(const image::Process& p);

void check_posix_locks(const image::Process& p);

}  // namespace snap::proc
