// Each restored thread's scheduling and CPU binding: its policy (SCHED_BATCH, SCHED_IDLE, a
// real-time one), nice value, priority and I/O priority (ionice), as the
// image has them. The
// threads start with snap restore's own; they get theirs once built, while
// still stopped.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <optional>
#include <vector>

#include "base/cpus.h"
#include "image/checkpoint.h"
#include "tracer/batch.h"
#include "tracer/mempolicy.h"
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

// The CPUs a thread bound to `bound` of the `given` ones at the dump is
// bound to where this restore may use `now`: the same CPUs where `now` is
// `given` (the same node and allotment, or no allotment known and `bound`
// within `now`); where `now` is as many other CPUs, the same ranks among
// them (the 3rd CPU of the job's, the 3rd of these: an MPI rank or OpenMP
// thread keeps its place in a new allocation); else nullopt.
std::optional<CpuList> cpus_here(const CpuList& bound, const CpuList& given, const CpuList& now);

// The process's NUMA memory policy as set_mempolicy takes it, where it had
// one and this restore may allocate on its nodes (its cpuset's); else
// nullopt, with a warning where it had one.
std::optional<MemPolicy> mempolicy_here(const image::Process& p);

// Gives the thread `batch` runs in `policy` (set_mempolicy).
void add_mempolicy(SyscallBatch& batch, const MemPolicy& policy);

// The policies a process's threads or mappings have of their own
// (ThreadState::mempolicy, Mapping::mempolicy: `texts`, empty ones for
// none), each distinct one parsed and checked once against the nodes this
// restore may allocate on; one it may not use or cannot read is left out,
// with one warning for all the `what` ("thread(s)") that had it, saying
// what they do `instead`.
class OwnPolicies {
 public:
  OwnPolicies(pid_t pid, const std::vector<std::string>& texts, const char* what,
              const char* instead);
  // The usable policy of that text, or nullptr.
  const MemPolicy* find(const std::string& text) const;

 private:
  std::map<std::string, MemPolicy> usable_;
};

// Gives the calling thread `policy` (if any) for the scope, and so every
// thread it creates meanwhile (they inherit it), then its own back; nothing
// where set_mempolicy refuses. The pages snap's threads allocate for a
// restored process (UFFDIO_COPY, process_vm_writev) follow the mapping's
// policy, else the allocating thread's.
class ThreadMempolicyScope {
 public:
  explicit ThreadMempolicyScope(const std::optional<MemPolicy>& policy);
  ~ThreadMempolicyScope();
  ThreadMempolicyScope(const ThreadMempolicyScope&) = delete;
  ThreadMempolicyScope& operator=(const ThreadMempolicyScope&) = delete;

 private:
  bool set_ = false;
  int mode_ = 0;
  std::vector<uint64_t> mask_;
};

// Gives mapping `m` `policy` (mbind over the whole of it; before its pages
// are written, they are then placed by it).
void add_mbind(SyscallBatch& batch, const image::Mapping& m, const MemPolicy& policy);

// Binds each of `tasks` that was bound at the dump (ThreadState::cpus)
// as cpus_here says, against the CPUs snap restore itself may use; threads
// it cannot place stay with what they inherit (snap restore's), and a
// warning says so, once per process.
void restore_cpu_binding(const std::vector<std::unique_ptr<Task>>& tasks, const image::Process& p,
                         const CpuList& given);

}  // namespace snap::restore
