// Signal and timer state of a restored process, installed through remote
// system calls in its (only) thread: handlers, alternate stack,
// clear_child_tid, interval timers, POSIX timers (with their ids), and the
// signals that were queued.
#pragma once

#include "image/checkpoint.h"
#include "tracer/remote.h"
#include "tracer/task.h"

namespace snap::restore {

// Blocks every signal in `task` (the saved mask is the caller's last step),
// then installs what `p` and `t` recorded.
void restore_signal_state(RemoteSyscalls& rs, Task& task, const image::Process& p,
                          const image::ThreadState& t);

}  // namespace snap::restore
