// Fds on /proc files of a thread that is not its process's leader
// (/proc/PID/task/TID/status, which /proc/thread-self/status resolves to,
// or /proc/TID/stat): the thread exists only once the rebuild has made it,
// after the skeleton has put every fd in place. The skeleton holds the fd's
// number with /dev/null (restore/install_fds.cc); the process opens the
// file itself once its threads are made, in its own /proc (a fresh pid
// namespace's when it runs in one).
#pragma once

#include "image/checkpoint.h"
#include "restore/files.h"
#include "tracer/batch.h"

namespace snap::restore {

// Opens every such fd of `p` at its number, flags and offset, with `batch`
// (the process's leader). A thread of another process that is rebuilt
// after `p` is not there yet: the restore fails, naming the fd and file.
void open_thread_proc_files(SyscallBatch& batch, const image::Process& p,
                            const ProcessFiles& files);

}  // namespace snap::restore
