// A thread's scheduling as the kernel keeps it (sched_getattr and
// sched_setattr, ioprio_get and ioprio_set): any thread snap can see is
// read without a privilege;
// setting one obeys the kernel's rules (the same owner; a lower nice or a
// real-time policy within the thread's RLIMIT_NICE and RLIMIT_RTPRIO, or
// CAP_SYS_NICE; SCHED_DEADLINE only with CAP_SYS_NICE).
#pragma once

#include <sys/types.h>

#include <string>

#include "image/checkpoint.h"

namespace snap {

// Throws SysError naming the thread when it cannot be read (it ended).
image::Scheduling read_scheduling(pid_t tid);

// 0, or the errno of sched_setattr(tid).
int set_scheduling(pid_t tid, const image::Scheduling& s);

// "SCHED_BATCH, nice 19", "SCHED_FIFO priority 10, reset on fork": for
// messages and snap info.
std::string describe_scheduling(const image::Scheduling& s);

// The CPUs the job rooted at `root` was given: its parent's affinity (the
// batch script's, snap run's; a thread snap cannot read: every online
// CPU) into ckpt.job_cpus; each thread's `cpus` (its affinity, as
// collected) is kept only where it differs from that: a binding.
void record_cpu_binding(image::Checkpoint& ckpt, pid_t root);

}  // namespace snap
