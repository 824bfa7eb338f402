// Recreating the threads of a restored process: the leader, whose memory is
// already rebuilt, runs clone3(CLONE_THREAD, set_tid = saved tid) once per
// other thread. Each new thread is born traced (PTRACE_O_TRACECLONE on the
// leader) and stopped, so snap sets its state before it runs a single
// instruction of the job.
#pragma once

#include <memory>
#include <vector>

#include "image/checkpoint.h"
#include "restore/remote_page.h"
#include "tracer/remote.h"
#include "tracer/task.h"

namespace snap::restore {

// Returns the new threads (p.threads[1..]), stopped, in the same order.
// check_free: the tids are the host's, name a process holding one.
std::vector<std::unique_ptr<Task>> create_threads(RemoteSyscalls& leader, RemotePage& page,
                                                  const image::Process& p, bool check_free);

}  // namespace snap::restore
