// Each restored thread's scheduling: its policy (SCHED_BATCH, SCHED_IDLE, a
// real-time one), nice value, priority and I/O priority (ionice), as the
// image has them. The
// threads start with snap restore's own; they get theirs once built, while
// still stopped.
#pragma once

#include <memory>
#include <vector>

#include "image/checkpoint.h"
#include "tracer/task.h"

namespace snap::restore {

// Gives each of `tasks` (in the order of p.threads) its saved scheduling.
// What the kernel does not let this restore give (a lower nice than the
// job's RLIMIT_NICE allows, a real-time policy beyond its RLIMIT_RTPRIO,
// SCHED_DEADLINE, without CAP_SYS_NICE; real-time I/O priority without
// CAP_SYS_ADMIN) is given as near as it allows (the same policy or
// SCHED_OTHER at the lowest nice allowed, best-effort I/O), with a
// warning naming the thread: a job's results do not depend on its
// priority. Images older than version 11 did not record it: left as is.
void restore_scheduling(const std::vector<std::unique_ptr<Task>>& tasks, const image::Process& p,
                        uint32_t format_version);

}  // namespace snap::restore
