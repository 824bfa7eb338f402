// Collecting a stopped process's state (everything but memory contents).
#pragma once

#include "image/checkpoint.h"
#include "tracer/fd_hints.h"
#include "tracer/task.h"
#include "tracer/vmflags.h"

#include "tracer/rseq.h"
#include "tracer/vdso.h"

namespace snap {

// One thread of process `pid`: registers, extended state, signal mask,
// queued signals (the process-wide queue with the leader), rseq, robust
// list and name. The registers, extended state and mask stay with `t` too
// (Task::keep_stop_state), for the parasite's guard of the thread.
// `rseq`: its rseq state as read_rseq_states read it at this stop. `vdso`:
// the process's [vdso], if any; a thread stopped inside it is run on out of
// it first (tracer/vdso.h).
image::ThreadState collect_thread(Task& t, pid_t pid, const RseqState& rseq, VdsoCode* vdso);

// /proc facts plus every thread's state, for a process of a SeizedTree;
// mapping flags from `hints` where they fit (tracer/vmflags.h), fds from
// `fd_hints` where they fit (tracer/fd_hints.h).
image::Process collect_process(const SeizedTree::Proc& p, proc::VmFlagsHints* hints = nullptr,
                               proc::FdHints* fd_hints = nullptr);

// An exited, unreaped child (SeizedTree::zombies()): ids, comm and the
// wait status its parent will get (/proc/PID/stat).
image::Process collect_zombie(pid_t pid);

}  // namespace snap
