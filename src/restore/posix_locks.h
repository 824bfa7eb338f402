// A process's POSIX record locks (fcntl F_SETLK), taken again in the
// restored process itself. They are the process's, and the kernel drops
// every one it holds on a file whenever the process closes any fd of that
// file: so they come last, once the mappings exist (whose files were
// opened and closed for mmap; a SQLite database in WAL mode maps the
// -shm file it locks).
#pragma once

#include "image/checkpoint.h"
#include "tracer/batch.h"

namespace snap::restore {

// Takes every POSIX lock of `p`'s fds, in one run of `batch` (the
// process's leader); a lock another process holds now fails the restore,
// naming the fd and range.
void take_posix_locks(SyscallBatch& batch, const image::Process& p);

}  // namespace snap::restore
