// How many CPUs snap may run on.
#pragma once

namespace snap {

// The CPUs in snap's affinity mask (sched_getaffinity: what taskset, cgroup
// cpusets and Slurm's binding leave it), at least 1. The default worker count
// of a dump (--jobs).
unsigned usable_cpus();

}  // namespace snap
