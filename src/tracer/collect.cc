#include "tracer/collect.h"

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <string_view>
#include <optional>
#include <map>
#include <charconv>

#include <fmt/core.h>

#include "base/cpus.h"
#include "base/error.h"
#include "base/log.h"
#include "tracer/devices.h"
#include "tracer/guard_regions.h"
#include "tracer/mempolicy.h"
#include "tracer/proc.h"
#include "tracer/rseq.h"
#include "tracer/scheduling.h"
#include "tracer/vdso.h"

namespace snap {

image::ThreadState collect_thread(Task& t, pid_t pid, const RseqState& rseq, VdsoCode* vdso) {
  const bool leader = t.tid() == pid;
  image::ThreadState ts;
  ts.tid = t.tid();
  ts.rseq = rseq.area;
  Registers regs = t.regs();
  // Stopped inside a restartable sequence: at its abort handler, before any
  // code runs in the thread (tracer/rseq.h).
  if (Registers out = leave_rseq_critical_section(t, regs, rseq); out.ip() != regs.ip()) {
    t.set_regs(out);
    regs = out;
  }
  // Inside the vDSO: run on to its caller (tracer/vdso.h).
  if (vdso && vdso->inside(regs.ip().as_int())) {
    const VdsoExit exit = leave_vdso(t, regs, *vdso);
    regs = exit.regs;
    if (exit.left && exit.steps)
      vlog("pid {} thread {}: stopped inside the vDSO, ran {} instruction(s) on out of it", pid,
           t.tid(), exit.steps);
    else if (exit.left)
      vlog("pid {} thread {}: stopped inside the vDSO, ran on to its caller ({} return(s))", pid,
           t.tid(), exit.returns);
    else if (exit.steps || exit.returns)
      vlog("pid {} thread {}: still inside the vDSO after {} return(s) and {} instruction(s); "
           "saved there (a restore under another kernel refuses it)", pid, t.tid(), exit.returns,
           exit.steps);
  }
  // Saved with an interrupted restartable syscall made explicit, so restore
  // re-issues it (see Registers::with_restart_applied).
  ts.in_syscall = regs.in_restartable_syscall();
  if (ts.in_syscall) ts.syscall_nr = regs.original_syscallno();
  ts.gpregs = regs.with_restart_applied().to_bytes();
  ts.xsave = t.xsave();
  ts.sigmask = t.signal_mask();
  t.keep_stop_state({regs, ts.xsave, ts.sigmask});  // for the parasite's guard of it
  uint64_t head = 0;
  size_t len = 0;
  if (::syscall(SYS_get_robust_list, t.tid(), &head, &len) == 0 && head)
    ts.robust_list = std::array<uint64_t, 2>{head, len};
  // Recorded only where it is not the default (SCHED_OTHER, nice 0).
  if (auto sched = read_scheduling(t.tid()); sched != image::Scheduling{}) ts.sched = sched;
  ts.cpus = thread_cpus(t.tid());  // kept where a binding (record_cpu_binding)
  ts.pending = t.pending_signals(false);
  if (leader) ts.pending_shared = t.pending_signals(true);
  // A signal the seize intercepted was already dequeued: keep it pending.
  if (t.intercepted_signal()) ts.pending.push_back(t.intercepted_siginfo());
  return ts;
}

namespace {

// The pool's default huge page size (/proc/meminfo Hugepagesize), 0 if none.
uint64_t default_huge_page() {
  auto text = proc::try_read_file("/proc/meminfo");
  constexpr std::string_view kKey = "Hugepagesize:";
  size_t k = text ? text->find(kKey) : std::string::npos;
  if (k == std::string::npos) return 0;
  k += kKey.size();
  while (k < text->size() && (*text)[k] == ' ') k++;
  uint64_t kib = 0;
  std::from_chars(text->data() + k, text->data() + text->size(), kib);
  return kib << 10;
}

// Memory from the hugetlb pool (MAP_HUGETLB, a hugetlbfs file, as
// libhugetlbfs and Cray's craype-hugepages modules give a job): a private
// mapping is saved as private memory of its huge page size, every page it
// holds (a hugetlbfs file's pages as the mapping shows them); anonymous
// shared memory (MAP_SHARED with MAP_HUGETLB, SHM_HUGETLB, an MFD_HUGETLB
// memfd only mappings hold) as a shared memory object of that page size. A
// hugetlbfs file mapped shared is refused, in words a user can act on.
void prepare_hugetlb(pid_t pid, std::vector<image::Mapping>& mappings) {
  std::optional<std::map<uint64_t, uint64_t>> sizes;
  for (auto& m : mappings) {
    if (!image::has_vmflag(m.vmflags, "ht")) continue;
    const std::string who = fmt::format("pid {} mapping {:#x}-{:#x} ({})", pid, m.start, m.end,
                                        m.path.empty() ? "anonymous" : m.path);
    if (m.shared && m.kind != image::MappingKind::SharedAnon)
      throw Error(who + " is a file of a hugetlbfs mount mapped shared",
                  "snap saves anonymous shared memory in huge pages (MAP_SHARED with MAP_HUGETLB, "
                  "SHM_HUGETLB) and private hugetlb memory, not hugetlbfs files; for a "
                  "checkpointable run, share the memory that way");
    // From numa_maps (absent without NUMA support: then the pool's default).
    if (!sizes)
      sizes = numa_maps_huge_page_sizes(
          proc::try_read_file(fmt::format("/proc/{}/numa_maps", pid)).value_or(""));
    auto it = sizes->find(m.start);
    const uint64_t page = it != sizes->end() ? it->second : default_huge_page();
    if (page < 4096 || (page & (page - 1)) || (m.start | m.end) % page)
      throw Error(who + " is memory in huge pages of the hugetlb pool whose page size snap "
                        "cannot tell",
                  "snap cannot save it");
    if (!m.shared) m.kind = image::MappingKind::Anonymous;
    m.hugetlb_page = page;
  }
}

}  // namespace

image::Process collect_process(const SeizedTree::Proc& p, proc::VmFlagsHints* hints,
                               proc::FdHints* fd_hints) {
  image::Process out = proc::read_process(p.pid, hints, fd_hints);
  refuse_stateful_device_mappings(p.pid, out.mappings);  // (its fds: as they are read)
  prepare_hugetlb(p.pid, out.mappings);
  out.mempolicy = task_mempolicy(p.pid);
  record_guard_regions(p.pid, out.mappings);  // in the page tables only: while stopped
  std::vector<const Task*> tasks;
  for (const auto& t : p.tasks) tasks.push_back(t.get());
  const std::vector<RseqState> rseq = read_rseq_states(p.pid, tasks);  // one call for all
  std::optional<VdsoCode> vdso;
  for (const auto& m : out.mappings)
    if (m.kind == image::MappingKind::Vdso) vdso.emplace(p.pid, m.start, m.end, out.mappings);
  for (size_t i = 0; i < p.tasks.size(); i++)
    out.threads.push_back(collect_thread(*p.tasks[i], p.pid, rseq[i], vdso ? &*vdso : nullptr));
  // A job-control stop is the whole process's: its leader says.
  if (!p.tasks.empty())
    if (auto sig = p.tasks[0]->job_control_stop()) out.stop_signal = *sig;
  return out;
}

image::Process collect_zombie(pid_t pid) {
  auto st = proc::read_stat(pid);
  if (st.state != 'Z' && st.state != 'X')
    throw Error("pid " + std::to_string(pid) + " was a zombie and is running again (pid reused?)");
  image::Process out;
  out.pid = pid;
  out.ppid = st.ppid;
  out.pgid = st.pgrp;
  out.sid = st.session;
  out.comm = st.comm;
  out.zombie = true;
  out.exit_status = st.exit_code;
  return out;
}

}  // namespace snap
