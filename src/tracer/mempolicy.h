// A process's NUMA memory policy (set_mempolicy: `numactl --membind`,
// `--interleave`, `--preferred`), as /proc/PID/numa_maps shows it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/cpus.h"
#include "image/checkpoint.h"

namespace snap {

// The task policy of `pid`'s main thread ("interleave:0-3", "bind=static:1",
// "prefer:0", "local"), read from the first line of its numa_maps, which
// shows it for a mapping of no policy of its own (the program's first
// mapping); empty for the default policy, or where it cannot be read (a
// kernel without NUMA).
std::string task_mempolicy(pid_t pid);

// The policies of `pid`'s mappings, by start address, as its numa_maps
// shows them: a mapping's own (mbind: libnuma's numa_alloc_onnode, hwloc's
// area binding, memkind) where it has one, else the task policy of the
// process's main thread ("default" is given as an empty text). The kernel walks every present page of what it prints
// (~10 ms a GiB resident): read it from a copy-on-write snapshot whose
// pages were released, or from a job that is being killed anyway.
// Empty where it cannot be read (a kernel without NUMA, the process gone).
std::map<uint64_t, std::string> mapping_mempolicies(pid_t pid);
// The same from numa_maps text.
std::map<uint64_t, std::string> numa_maps_policies(std::string_view text);
// The huge page size, in bytes, of each mapping from the hugetlb pool in
// numa_maps text ("huge ... kernelpagesize_kB=2048"), by start address.
std::map<uint64_t, uint64_t> numa_maps_huge_page_sizes(std::string_view text);

// Records in each of `mappings` the policy of its own that `policies`
// (mapping_mempolicies of the process or of its snapshot) shows, where it
// differs from `task_policy` (the process's, Process::mempolicy): a mapping
// without one shows the task's. One whose start is not there (kept out of
// a snapshot) keeps what it has.
void record_mapping_mempolicies(const std::map<uint64_t, std::string>& policies,
                                const std::string& task_policy,
                                std::vector<image::Mapping>& mappings);

// A policy text as set_mempolicy takes it: mode, flags and the nodes.
struct MemPolicy {
  int mode = 0;    // MPOL_*
  int flags = 0;   // MPOL_F_STATIC_NODES, MPOL_F_RELATIVE_NODES, MPOL_F_NUMA_BALANCING
  CpuList nodes;   // node numbers (the same list format as CPUs)
};
// "default" is mode 0 (MPOL_DEFAULT).
std::optional<MemPolicy> parse_mempolicy(const std::string& text);
// A nodemask (get_mempolicy's, set_mempolicy's and mbind's: bit n for
// node n, in 64-bit words) as a node list, and back (at least `words`).
CpuList nodes_of(const uint64_t* mask, size_t words);
std::vector<uint64_t> nodemask_of(const CpuList& nodes, size_t words);

// A policy as get_mempolicy gives it: the mode with its flags ORed in, and
// the nodemask (`words` 64-bit words).
MemPolicy mempolicy_of(int mode_and_flags, const uint64_t* mask, size_t words);
// The text of `p` as numa_maps writes it (parse_mempolicy's inverse).
std::string mempolicy_text(const MemPolicy& p);
inline bool operator==(const MemPolicy& a, const MemPolicy& b) {
  return a.mode == b.mode && a.flags == b.flags && a.nodes == b.nodes;
}

// The NUMA nodes the calling thread may allocate on (get_mempolicy's
// MPOL_F_MEMS_ALLOWED: its cpuset's); empty where the kernel has no NUMA.
CpuList allowed_memory_nodes();

}  // namespace snap
