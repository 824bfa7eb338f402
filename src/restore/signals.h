// Signal and timer state of a restored process, installed through remote
// system calls. The caller blocks every signal in every thread first (a
// delivery now would only reach snap as a ptrace stop) and sets the saved
// masks last.
#pragma once

#include <sys/types.h>

#include "image/checkpoint.h"
#include "restore/remote_page.h"
#include "tracer/remote.h"

namespace snap::restore {

// Process-wide, run in any thread once all threads exist: handlers,
// interval timers, POSIX timers (with their ids), pdeathsig, and the
// signals queued for the whole process.
void restore_process_signals(RemoteSyscalls& rs, RemotePage& page, const image::Process& p);

// Run in thread `t` itself: its alternate signal stack, clear_child_tid,
// robust futex list, rseq area, and the signals queued for it.
void restore_thread_state(RemoteSyscalls& rs, RemotePage& page, pid_t tgid,
                          const image::ThreadState& t);

}  // namespace snap::restore
