// Signal and timer state of a restored process, installed through remote
// system calls, most of them queued in a SyscallBatch (the caller runs it
// in the right thread). The caller blocks every signal in every thread first (a
// delivery now would only reach snap as a ptrace stop) and sets the saved
// masks last.
#pragma once

#include <sys/types.h>

#include <memory>
#include <vector>

#include "image/checkpoint.h"
#include "restore/remote_page.h"
#include "tracer/batch.h"
#include "tracer/remote.h"
#include "tracer/task.h"

namespace snap::restore {

// Process-wide, run in any thread once all threads exist: handlers,
// interval timers, POSIX timers (with their ids), pdeathsig, and the
// signals queued for the whole process.
// POSIX timers are made at once through `rs`; the rest is queued in `batch`.
// A job that ignores SIGTRAP: its SIG_IGN, set through `rs` once no more
// batches run (the kernel resets an ignored SIGTRAP it forces, and each
// batch ends on a breakpoint).
void restore_ignored_sigtrap(RemoteSyscalls& rs, const image::Process& p);
// A SIGTRAP pending for the process or one of its threads (sent while it
// blocked it): queued once no more batches run (each runs with SIGTRAP
// unblocked: one pending would be delivered inside it), by the leader
// (`rs`) for the process and by each thread of `tasks` (in the order of
// p.threads, stopped, every mask still blocking all) for itself.
void requeue_sigtraps(RemoteSyscalls& rs, const std::vector<std::unique_ptr<Task>>& tasks,
                      const image::Process& p);

void restore_process_signals(RemoteSyscalls& rs, RemotePage& page, SyscallBatch& batch,
                             const image::Process& p);

// Queued for thread `t` itself to run: its name, alternate signal stack,
// clear_child_tid, robust futex list, rseq area, and its queued signals.
void restore_thread_state(SyscallBatch& batch, pid_t tgid, const image::ThreadState& t);

}  // namespace snap::restore
