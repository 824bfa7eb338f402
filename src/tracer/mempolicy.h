// A process's NUMA memory policy (set_mempolicy: `numactl --membind`,
// `--interleave`, `--preferred`), as /proc/PID/numa_maps shows it.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "base/cpus.h"

namespace snap {

// The task policy of `pid`'s main thread ("interleave:0-3", "bind=static:1",
// "prefer:0", "local"), read from the first line of its numa_maps, which
// shows it for a mapping of no policy of its own (the program's first
// mapping); empty for the default policy, or where it cannot be read (a
// kernel without NUMA).
std::string task_mempolicy(pid_t pid);

// A policy text as set_mempolicy takes it: mode, flags and the nodes.
struct MemPolicy {
  int mode = 0;    // MPOL_*
  int flags = 0;   // MPOL_F_STATIC_NODES, MPOL_F_RELATIVE_NODES
  CpuList nodes;   // node numbers (the same list format as CPUs)
};
std::optional<MemPolicy> parse_mempolicy(const std::string& text);

// The NUMA nodes the calling thread may allocate on (get_mempolicy's
// MPOL_F_MEMS_ALLOWED: its cpuset's); empty where the kernel has no NUMA.
CpuList allowed_memory_nodes();

}  // namespace snap
