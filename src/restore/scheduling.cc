#include "restore/scheduling.h"

#include <sched.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "base/error.h"
#include "base/log.h"
#include "tracer/scheduling.h"

namespace snap::restore {

namespace {

constexpr uint32_t kFirstVersionWithScheduling = 11;
constexpr int kLowestPriority = 19;  // the highest nice value

bool real_time(uint32_t policy) {
  return policy == SCHED_FIFO || policy == SCHED_RR || policy == SCHED_DEADLINE;
}

// The nearest to `wanted` the kernel lets snap give `tid`: the same policy
// at a higher nice, or, for a real-time one, SCHED_OTHER at the nice the
// thread had; nullopt where nothing is allowed (then it keeps what it has).
std::optional<image::Scheduling> nearest_allowed(pid_t tid, const image::Scheduling& wanted) {
  constexpr uint32_t kIoClassRealtime = 1, kIoClassBestEffort = 2, kIoClassShift = 13;
  image::Scheduling base = wanted;
  if (real_time(wanted.policy)) {
    base = image::Scheduling{};
    base.policy = SCHED_OTHER;
    base.reset_on_fork = wanted.reset_on_fork;
    base.ioprio = wanted.ioprio;
  }
  if (base.ioprio >> kIoClassShift == kIoClassRealtime)  // needs CAP_SYS_ADMIN
    base.ioprio = (kIoClassBestEffort << kIoClassShift) | (base.ioprio & 7);
  for (int nice = base.nice; nice <= kLowestPriority; nice++) {
    image::Scheduling s = base;
    s.nice = nice;
    if (set_scheduling(tid, s) == 0) return s;
  }
  return std::nullopt;
}

}  // namespace

void restore_scheduling(const std::vector<std::unique_ptr<Task>>& tasks, const image::Process& p,
                        uint32_t format_version) {
  if (format_version < kFirstVersionWithScheduling || tasks.empty()) return;
  // What every thread has until it is given its own: the leader's (snap
  // restore's, inherited), its threads cloned from it before any is set.
  const image::Scheduling now = read_scheduling(tasks[0]->tid());
  for (size_t i = 0; i < tasks.size() && i < p.threads.size(); i++) {
    const pid_t tid = tasks[i]->tid();
    const image::Scheduling wanted = p.threads[i].sched.value_or(image::Scheduling{});
    if (now == wanted) continue;
    const int err = set_scheduling(tid, wanted);
    if (err == 0) continue;
    if (err != EPERM && err != EINVAL && err != EBUSY)
      throw SysError(fmt::format("pid {} thread {}: sched_setattr ({})", p.pid, p.threads[i].tid,
                                 describe_scheduling(wanted)),
                     err);
    const auto given = nearest_allowed(tid, wanted);
    warn("pid {} thread {} ran with {}; the kernel does not let this restore give it ({}): it "
         "runs with {} (run snap restore as root, or raise the job's RLIMIT_NICE or "
         "RLIMIT_RTPRIO, to give it back)",
         p.pid, p.threads[i].tid, describe_scheduling(wanted), std::strerror(err),
         describe_scheduling(given.value_or(now)));
  }
}

std::optional<CpuList> cpus_here(const CpuList& bound, const CpuList& given, const CpuList& now) {
  auto within = [](const CpuList& part, const CpuList& whole) {
    return std::includes(whole.begin(), whole.end(), part.begin(), part.end());
  };
  if (bound.empty()) return std::nullopt;
  if (given == now || (given.empty() && within(bound, now))) return bound;
  if (given.size() != now.size() || !within(bound, given)) return std::nullopt;
  CpuList out;
  for (uint32_t c : bound)
    out.push_back(now[static_cast<size_t>(std::lower_bound(given.begin(), given.end(), c) - given.begin())]);
  std::sort(out.begin(), out.end());
  return out;
}

void restore_cpu_binding(const std::vector<std::unique_ptr<Task>>& tasks, const image::Process& p,
                         const CpuList& given) {
  const CpuList now = thread_cpus(0);  // what the restored threads inherit
  std::vector<std::string> unplaced;
  for (size_t i = 0; i < tasks.size() && i < p.threads.size(); i++) {
    const auto& bound = p.threads[i].cpus;
    if (bound.empty()) continue;
    const auto here = cpus_here(bound, given, now);
    const int err = here ? set_thread_cpus(tasks[i]->tid(), *here) : 0;
    if (!here || err)
      unplaced.push_back(fmt::format("thread {} to {}{}", p.threads[i].tid, cpu_list_text(bound),
                                     err ? fmt::format(" ({})", std::strerror(err)) : ""));
  }
  if (unplaced.empty()) return;
  warn("pid {}: {} thread(s) were bound to CPUs of the {} the job had ({}{}); this restore may use "
       "{}, which they do not map to: they run on those, unbound (restore on a node and "
       "allocation with as many CPUs to bind them again)",
       p.pid, unplaced.size(), given.empty() ? std::string("?") : cpu_list_text(given),
       unplaced.front(), unplaced.size() > 1 ? ", ..." : "", cpu_list_text(now));
}

namespace {

// `text` as set_mempolicy takes it where this restore may allocate on its
// nodes (its cpuset's: `allowed`); else nullopt, with a warning: `whom`
// had it, and what happens `instead`.
std::optional<MemPolicy> usable_mempolicy(const std::string& text, const CpuList& allowed,
                                          const std::string& whom, const char* instead) {
  const auto policy = parse_mempolicy(text);
  if (policy && std::includes(allowed.begin(), allowed.end(), policy->nodes.begin(),
                              policy->nodes.end()))
    return policy;
  warn("{} had the memory policy {}; {}: {}", whom, text,
       policy ? fmt::format("this restore may use NUMA nodes {} only", cpu_list_text(allowed))
              : std::string("snap cannot read it"),
       instead);
  return std::nullopt;
}

}  // namespace

std::optional<MemPolicy> mempolicy_here(const image::Process& p) {
  if (p.mempolicy.empty()) return std::nullopt;
  // The restored threads inherit these nodes.
  return usable_mempolicy(p.mempolicy, allowed_memory_nodes(), fmt::format("pid {}", p.pid),
                          "it runs with the default policy");
}

OwnPolicies::OwnPolicies(pid_t pid, const std::vector<std::string>& texts, const char* what,
                         const char* instead) {
  std::map<std::string, size_t> count;
  for (const auto& t : texts)
    if (!t.empty()) count[t]++;
  if (count.empty()) return;
  const CpuList allowed = allowed_memory_nodes();
  for (const auto& [text, n] : count)
    if (auto p = usable_mempolicy(text, allowed, fmt::format("pid {}: {} {}", pid, n, what), instead))
      usable_.emplace(text, *p);
}

const MemPolicy* OwnPolicies::find(const std::string& text) const {
  auto it = usable_.find(text);
  return it == usable_.end() ? nullptr : &it->second;
}

namespace {

// A policy's nodemask put in the batch's arena (unsigned longs); `maxnode`:
// one past the highest node, as set_mempolicy and mbind take it. Reserves
// room for `calls` calls besides.
uint64_t put_nodemask(SyscallBatch& batch, const MemPolicy& policy, size_t calls,
                      uint64_t* maxnode) {
  *maxnode = policy.nodes.empty() ? 0 : policy.nodes.back() + 2;
  const std::vector<uint64_t> mask = nodemask_of(policy.nodes, (*maxnode + 63) / 64 + 1);
  batch.reserve(calls, mask.size() * sizeof(uint64_t));
  const uint64_t at = batch.put(mask.data(), mask.size() * sizeof(uint64_t)).as_int();
  return policy.nodes.empty() ? 0 : at;
}

}  // namespace

void add_mempolicy(SyscallBatch& batch, const MemPolicy& policy) {
  uint64_t maxnode = 0;
  const uint64_t mask = put_nodemask(batch, policy, 1, &maxnode);
  batch.add("set_mempolicy", SyscallBatch::kMayFail, SYS_set_mempolicy,
            static_cast<uint64_t>(policy.mode | policy.flags), mask, maxnode);
}

namespace {
constexpr unsigned long kMaxNodes = 1024;  // get_mempolicy's and set_mempolicy's maxnode here
}  // namespace

ThreadMempolicyScope::ThreadMempolicyScope(const std::optional<MemPolicy>& policy)
    : mask_(kMaxNodes / 64, 0) {
  if (!policy) return;
  if (::syscall(SYS_get_mempolicy, &mode_, mask_.data(), kMaxNodes, nullptr, 0) != 0) return;
  if (!policy->nodes.empty() && policy->nodes.back() >= kMaxNodes) return;
  const std::vector<uint64_t> want = nodemask_of(policy->nodes, kMaxNodes / 64);
  set_ = ::syscall(SYS_set_mempolicy, policy->mode | policy->flags,
                   policy->nodes.empty() ? nullptr : want.data(), policy->nodes.empty() ? 0 : kMaxNodes) == 0;
}

ThreadMempolicyScope::~ThreadMempolicyScope() {
  if (!set_) return;
  // The mode as get_mempolicy gave it carries its flags; an empty mask
  // (the default, local) is passed as none.
  const bool empty = std::all_of(mask_.begin(), mask_.end(), [](uint64_t w) { return w == 0; });
  (void)::syscall(SYS_set_mempolicy, mode_, empty ? nullptr : mask_.data(), empty ? 0 : kMaxNodes);
}

void add_mbind(SyscallBatch& batch, const image::Mapping& m, const MemPolicy& policy) {
  uint64_t maxnode = 0;
  const uint64_t mask = put_nodemask(batch, policy, 1, &maxnode);
  batch.add(fmt::format("mbind({}) of {:#x}-{:#x}", m.mempolicy, m.start, m.end),
            SyscallBatch::kMayFail, SYS_mbind, m.start, m.end - m.start,
            static_cast<uint64_t>(policy.mode | policy.flags), mask, maxnode, 0);
}

}  // namespace snap::restore
