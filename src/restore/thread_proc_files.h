// Fds on /proc files of a thread that is not its process's leader
// (/proc/PID/task/TID/status, which /proc/thread-self/status resolves to,
// or /proc/TID/stat): the thread exists only once the rebuild has made it,
// after the skeleton has put every fd in place. The skeleton holds the fd's
// number with /dev/null (restore/install_fds.cc); the process opens the
// file itself once its threads are made (the thread's process is rebuilt
// before it where it is another), in its own /proc (a fresh pid
// namespace's when it runs in one).
#pragma once

#include <vector>

#include "image/checkpoint.h"
#include "restore/files.h"
#include "tracer/batch.h"

namespace snap::restore {

// Opens every such fd of `p` at its number, flags and offset, with `batch`
// (the process's leader), once its threads are made. A thread of another
// process that is not there yet (two processes each holding such a file of
// the other's threads) fails the restore, naming the fd and file.
void open_thread_proc_files(SyscallBatch& batch, const image::Process& p,
                            const ProcessFiles& files);

// The live processes of `ckpt` in the order to rebuild them: the image's,
// but a process whose thread another holds such a file of comes before it.
std::vector<const image::Process*> rebuild_order(const image::Checkpoint& ckpt,
                                                 const OpenFiles& files);

}  // namespace snap::restore
