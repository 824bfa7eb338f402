#include "tracer/scheduling.h"

#include <linux/sched.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <fmt/core.h>

#include "base/cpus.h"
#include "base/error.h"
#include "tracer/proc.h"

namespace snap {

namespace {

// The kernel's struct sched_attr (its first version, 48 bytes: the
// utilization clamps after it are not used); <linux/sched/types.h> would
// clash with glibc's struct sched_param.
struct SchedAttr {
  uint32_t size;
  uint32_t sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime, sched_deadline, sched_period;
};
static_assert(sizeof(SchedAttr) == 48);

constexpr int kIoprioWhoProcess = 1;  // IOPRIO_WHO_PROCESS: one thread, by tid
constexpr int kIoprioClassShift = 13;

}  // namespace

image::Scheduling read_scheduling(pid_t tid) {
  SchedAttr a{};
  if (::syscall(SYS_sched_getattr, tid, &a, sizeof a, 0) != 0)
    throw SysError(fmt::format("sched_getattr(thread {})", tid), errno);
  image::Scheduling s;
  s.policy = a.sched_policy;
  s.reset_on_fork = (a.sched_flags & SCHED_FLAG_RESET_ON_FORK) != 0;
  s.nice = a.sched_nice;
  s.priority = a.sched_priority;
  if (a.sched_policy == SCHED_DEADLINE) {
    s.runtime = a.sched_runtime;
    s.deadline = a.sched_deadline;
    s.period = a.sched_period;
  }
  const long io = ::syscall(SYS_ioprio_get, kIoprioWhoProcess, tid);
  if (io < 0) throw SysError(fmt::format("ioprio_get(thread {})", tid), errno);
  s.ioprio = static_cast<uint32_t>(io);
  return s;
}

int set_scheduling(pid_t tid, const image::Scheduling& s) {
  SchedAttr a{};
  a.size = sizeof a;
  a.sched_policy = s.policy;
  a.sched_flags = s.reset_on_fork ? SCHED_FLAG_RESET_ON_FORK : 0;
  a.sched_nice = s.nice;
  a.sched_priority = s.priority;
  a.sched_runtime = s.runtime;
  a.sched_deadline = s.deadline;
  a.sched_period = s.period;
  if (::syscall(SYS_sched_setattr, tid, &a, 0) != 0) return errno;
  return ::syscall(SYS_ioprio_set, kIoprioWhoProcess, tid, s.ioprio) == 0 ? 0 : errno;
}

std::string describe_scheduling(const image::Scheduling& s) {
  std::string out;
  switch (s.policy) {
    case SCHED_OTHER: out = "SCHED_OTHER"; break;
    case SCHED_BATCH: out = "SCHED_BATCH"; break;
    case SCHED_IDLE: out = "SCHED_IDLE"; break;
    case SCHED_FIFO: out = "SCHED_FIFO"; break;
    case SCHED_RR: out = "SCHED_RR"; break;
    case SCHED_DEADLINE: out = "SCHED_DEADLINE"; break;
    default: out = fmt::format("policy {}", s.policy);
  }
  if (s.policy == SCHED_FIFO || s.policy == SCHED_RR)
    out += fmt::format(" priority {}", s.priority);
  else if (s.policy == SCHED_DEADLINE)
    out += fmt::format(" runtime {} ns, deadline {} ns, period {} ns", s.runtime, s.deadline,
                       s.period);
  else
    out += fmt::format(", nice {}", s.nice);
  if (s.reset_on_fork) out += ", reset on fork";
  if (s.ioprio) {
    static const char* const kClasses[] = {"none", "realtime", "best-effort", "idle"};
    const uint32_t cls = s.ioprio >> kIoprioClassShift, level = s.ioprio & 7;
    out += fmt::format(", I/O {}", cls < 4 ? kClasses[cls] : "class ?");
    if (cls == 1 || cls == 2) out += fmt::format(" level {}", level);
  }
  return out;
}

void record_cpu_binding(image::Checkpoint& ckpt, pid_t root) {
  CpuList given;
  if (auto stat = proc::try_read_file("/proc/" + std::to_string(root) + "/stat"))
    given = thread_cpus(proc::parse_stat(*stat).ppid);
  if (given.empty())
    if (auto online = proc::try_read_file("/sys/devices/system/cpu/online"))
      given = parse_cpu_list(*online).value_or(CpuList{});
  ckpt.job_cpus = given;
  for (auto& p : ckpt.processes)
    for (auto& t : p.threads)
      if (t.cpus == given) t.cpus.clear();
}

}  // namespace snap
