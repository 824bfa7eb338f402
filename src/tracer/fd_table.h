// The fd table of a stopped process: every open fd with what /proc and the
// fd itself show (path, type, offset, flags, kind-specific state).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"

namespace snap::proc {

class FdHints;

// The fds of stopped process `pid`, by number. Each is read through snap's
// own copy of it (pidfd_getfd) and /proc/PID/fdinfo, or, where `hints` has
// one for it that fdinfo confirms, from that (fd_hints.h: the hints then
// list which); a table of thousands is read by several threads (the job is
// stopped meanwhile). Throws Error naming pid and fd for what a restore
// could not bring back.
std::vector<image::FileDesc> read_fds(pid_t pid, FdHints* hints = nullptr);

// read_fds of a running process (for hints), keeping snap's copy of each
// fd FdHints::can_hint takes in `copies` (by index of the result; none for
// the others) if the table has at most `max_copies` fds.
std::vector<image::FileDesc> read_fds_keeping_copies(pid_t pid, size_t max_copies,
                                                     std::vector<ScopedFd>& copies);

// Reader threads for `n` fds: one per CPU snap may use, at most 4, and one
// per 1,000 fds (each fd read whole costs ~10 system calls, ~25 us).
unsigned fd_reader_threads(size_t n);

}  // namespace snap::proc
