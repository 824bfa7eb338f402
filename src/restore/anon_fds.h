// Anonymous-inode fds made again from their saved state (signalfd, timerfd,
// inotify, pidfd), and the per-fd state a restored fd gets once it is at its
// number: locks (POSIX, OFD, flock, leases) and its owner (F_SETOWN).
// Plain system calls: snap uses them for shared objects, a skeleton for
// its own fds.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "image/checkpoint.h"

namespace snap::restore {

// Is `f` one of the kinds make_anon_fd makes?
bool is_anon_fd(const image::FileDesc& f);

// A new signalfd, timerfd, inotify fd or pidfd (close-on-exec) with f's
// state and status flags. -1 with *err set on failure.
//  - pidfd: pidfd_open of the saved pid (the process itself, its parent,
//    a child: a skeleton's children are forked before it installs its fds;
//    a grandchild, made beside it by a child's skeleton, is waited for);
//  - timerfd: armed with the time that was left at the dump (an absolute
//    timer: now + that time, still absolute), its unread expirations set
//    again (TFD_IOC_SET_TICKS);
//  - inotify: each watch added again by path under its own number (numbers
//    below it are used up by watches on a private memfd, added and removed;
//    the events this queues are read away); a watch on a deleted file on
//    the calling process's fd on its remade ghost, from `ghosts` (ghost id
//    -> fd; such a watch without it fails).
int make_anon_fd(const image::FileDesc& f, std::string* err,
                 const std::map<uint64_t, int>* ghosts = nullptr);

// Does `f` (an inotify fd) watch a deleted file (one that needs `ghosts`)?
bool watches_ghost(const image::FileDesc& f);

// Takes f's OFD and flock locks and leases through `fd`, then sets its
// owner and signal. 0, or -1 with *err set (naming what held a lock in the
// way). POSIX locks are the process's, dropped by any close of the file in
// it: the restore takes them once its mappings exist (take_posix_locks).
int apply_fd_state(int fd, const image::FileDesc& f, std::string* err);

// An eventfd with its saved counter and flags; -1 with errno on failure.
int make_eventfd(uint64_t count, bool semaphore, int flags);
// An epoll instance with the job's O_NONBLOCK; -1 with errno on failure.
int make_epoll(int flags);
// Registers watch `t` with `epoll_fd` again (through a copy at t.fd when the
// job holds the file under another number, t.via). 0, or -1 with *err set.
int watch_again(int epoll_fd, const image::EpollTarget& t, std::string* err);

}  // namespace snap::restore
