// CPUs: how many snap may run on, and CPU sets (affinity masks) as lists.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace snap {

// The CPUs in snap's affinity mask (sched_getaffinity: what taskset, cgroup
// cpusets and Slurm's binding leave it), at least 1. The default worker count
// of a dump (--jobs).
unsigned usable_cpus();

// A set of CPUs, sorted, without repeats.
using CpuList = std::vector<uint32_t>;

// "0-3,8", as the kernel writes lists (cpuset.cpus, Cpus_allowed_list), and
// back; nullopt for text that is not such a list.
std::string cpu_list_text(const CpuList& cpus);
std::optional<CpuList> parse_cpu_list(std::string_view text);

// The CPUs thread `tid` may run on (sched_getaffinity; 0: the caller);
// empty when it cannot be read (the thread ended).
CpuList thread_cpus(pid_t tid);

// Binds thread `tid` to `cpus` (sched_setaffinity): 0, or the errno.
int set_thread_cpus(pid_t tid, const CpuList& cpus);

}  // namespace snap
