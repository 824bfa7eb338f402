#include "restore/signals.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <fmt/core.h>
#include <memory>
#include <optional>
#include <vector>

#include "base/error.h"
#include "base/log.h"

namespace snap::restore {

namespace {

// prctl(PR_TIMER_CREATE_RESTORE_IDS): timer_create() takes the id to use
// from *timer_id (Linux 6.17+; not yet in every header).
constexpr int kPrTimerCreateRestoreIds = 77;

// The kernel's struct sigaction on x86_64 (not glibc's).
struct KernelSigaction {
  uint64_t handler, flags, restorer, mask;
};

struct KernelStack {  // stack_t
  uint64_t sp;
  int32_t flags;
  int32_t pad;
  uint64_t size;
};

timespec to_timespec(int64_t ns) { return {ns / 1000000000, ns % 1000000000}; }
timeval to_timeval(int64_t ns) { return {ns / 1000000000, (ns % 1000000000) / 1000}; }

int signo_of(const std::vector<uint8_t>& info) {
  int signo = 0;
  if (info.size() >= sizeof signo) std::memcpy(&signo, info.data(), sizeof signo);
  return signo;
}

bool ignores_sigtrap(const image::Process& p) {
  return std::any_of(p.sigactions.begin(), p.sigactions.end(), [](const auto& a) {
    return a.signo == SIGTRAP && a.handler == reinterpret_cast<uint64_t>(SIG_IGN);
  });
}

void restore_sigactions(SyscallBatch& batch, const image::Process& p) {
  for (const auto& a : p.sigactions) {
    if (a.signo == SIGKILL || a.signo == SIGSTOP) continue;
    // An ignored SIGTRAP waits for restore_ignored_sigtrap: the breakpoint
    // ending each batch would turn it back to the default.
    if (a.signo == SIGTRAP && ignores_sigtrap(p)) continue;
    KernelSigaction k{a.handler, a.flags, a.restorer, a.mask};
    batch.reserve(1, sizeof k);
    batch.add(fmt::format("rt_sigaction({})", a.signo), SYS_rt_sigaction,
              static_cast<uint64_t>(a.signo), batch.put_value(k).as_int(), 0, 8);
  }
}

void restore_thread_bits(SyscallBatch& batch, const image::ThreadState& t) {
  batch.reserve(4, sizeof(KernelStack));
  if (t.rseq) {
    const auto& [area, len, sig] = *t.rseq;
    batch.add("rseq registration", SYS_rseq, area, len, 0, sig);
  }
  if (t.robust_list)
    batch.add("set_robust_list", SYS_set_robust_list, (*t.robust_list)[0], (*t.robust_list)[1]);
  if (t.sigaltstack) {
    const auto& [sp, flags, size] = *t.sigaltstack;
    // SS_ONSTACK describes where the thread was, it cannot be set.
    KernelStack ss{sp, static_cast<int32_t>(flags & ~uint64_t{SS_ONSTACK}), 0, size};
    batch.add("sigaltstack", SYS_sigaltstack, batch.put_value(ss).as_int(), 0);
  }
  if (t.clear_child_tid)
    batch.add("set_tid_address", SyscallBatch::kMayFail, SYS_set_tid_address, *t.clear_child_tid);
}

void restore_itimers(SyscallBatch& batch, const image::Process& p) {
  if (!p.itimers) return;
  for (int which = 0; which < 3; which++) {
    const auto& v = (*p.itimers)[static_cast<size_t>(which)];
    if (!v.interval_ns && !v.value_ns) continue;
    // Caught with its signal pending, a periodic timer reads 0: re-arm it
    // for one interval.
    int64_t value = v.value_ns ? v.value_ns : v.interval_ns;
    itimerval it{to_timeval(v.interval_ns), to_timeval(value)};
    if (!it.it_value.tv_sec && !it.it_value.tv_usec) it.it_value.tv_usec = 1;
    batch.reserve(1, sizeof it);
    batch.add(fmt::format("setitimer({})", which), SYS_setitimer, static_cast<uint64_t>(which),
              batch.put_value(it).as_int(), 0);
  }
}

// "thread/tid.124" -> 124 (the restored thread has its saved tid).
pid_t notify_tid(const std::string& notify, pid_t fallback) {
  auto dot = notify.rfind('.');
  if (dot == std::string::npos) return fallback;
  return static_cast<pid_t>(std::atoi(notify.c_str() + dot + 1));
}

void restore_posix_timers(RemoteSyscalls& rs, RemotePage& page, const image::Process& p) {
  if (p.posix_timers.empty()) return;
  if (rs.syscall(SYS_prctl, kPrTimerCreateRestoreIds, 1, 0, 0, 0) != 0)
    throw Error(fmt::format("pid {} has {} POSIX timer(s), and this kernel cannot re-create "
                            "timers with given ids",
                            p.pid, p.posix_timers.size()),
                "restore on Linux 6.17 or newer (PR_TIMER_CREATE_RESTORE_IDS)");
  for (const auto& t : p.posix_timers) {
    sigevent ev;
    std::memset(&ev, 0, sizeof ev);
    ev.sigev_value.sival_ptr = reinterpret_cast<void*>(t.sigev_value);
    ev.sigev_signo = t.signo;
    // /proc/PID/timers "notify: HOW/WHO.ID": HOW signal, none or thread;
    // WHO "tid" when the signal goes to one thread (SIGEV_THREAD_ID, as
    // glibc's SIGEV_THREAD timers do: to their helper thread), else "pid".
    if (t.notify.starts_with("none")) {
      ev.sigev_notify = SIGEV_NONE;
    } else {
      ev.sigev_notify = SIGEV_SIGNAL;
      if (t.notify.find("/tid.") != std::string::npos) {
        ev.sigev_notify |= SIGEV_THREAD_ID;
        ev._sigev_un._tid = notify_tid(t.notify, p.pid);
      }
    }
    constexpr uint64_t kIdAt = 512;
    uint64_t ev_at = page.put(ev);
    uint64_t id_at = page.put(static_cast<int32_t>(t.id), kIdAt);
    rs.checked(fmt::format("timer_create(id {})", t.id), SYS_timer_create,
               static_cast<uint64_t>(t.clock_id), ev_at, id_at);
    if (int got = page.get<int32_t>(kIdAt); got != t.id)
      throw Error(fmt::format("POSIX timer {} came back as id {}", t.id, got));
    int64_t value = t.value.value_ns ? t.value.value_ns : t.value.interval_ns;
    if (!value && !t.value.interval_ns) continue;  // disarmed
    itimerspec its{to_timespec(t.value.interval_ns), to_timespec(value)};
    rs.checked(fmt::format("timer_settime(id {})", t.id), SYS_timer_settime,
               static_cast<uint64_t>(t.id), 0, page.put(its), 0);
  }
  rs.syscall(SYS_prctl, kPrTimerCreateRestoreIds, 0, 0, 0, 0);
}

// The thread's own queue (shared = false) or the process's.
void requeue_signals(SyscallBatch& batch, pid_t tgid, pid_t tid,
                     const std::vector<std::vector<uint8_t>>& queued, bool shared) {
  auto queue = [&](const std::vector<uint8_t>& info) {
    siginfo_t si;
    std::memset(&si, 0, sizeof si);
    std::memcpy(&si, info.data(), std::min(info.size(), sizeof si));
    batch.reserve(1, sizeof si);
    uint64_t at = batch.put_value(si).as_int();
    if (shared)
      batch.add("rt_sigqueueinfo", SYS_rt_sigqueueinfo, static_cast<uint64_t>(tgid),
                static_cast<uint64_t>(si.si_signo), at);
    else
      batch.add("rt_tgsigqueueinfo", SYS_rt_tgsigqueueinfo, static_cast<uint64_t>(tgid),
                static_cast<uint64_t>(tid), static_cast<uint64_t>(si.si_signo), at);
  };
  // A pending SIGTRAP waits for requeue_sigtraps: each batch runs with
  // SIGTRAP unblocked (it ends on a breakpoint), so one queued now would
  // be delivered inside the next batch.
  for (const auto& info : queued)
    if (signo_of(info) != SIGTRAP) queue(info);
}

}  // namespace

void restore_ignored_sigtrap(RemoteSyscalls& rs, const image::Process& p) {
  for (const auto& a : p.sigactions) {
    if (a.signo != SIGTRAP || !ignores_sigtrap(p)) continue;
    RemotePage page(rs);
    KernelSigaction k{a.handler, a.flags, a.restorer, a.mask};
    rs.checked("rt_sigaction(SIGTRAP, SIG_IGN)", SYS_rt_sigaction, SIGTRAP, page.put(k), 0, 8);
  }
}

void requeue_sigtraps(RemoteSyscalls& rs, const std::vector<std::unique_ptr<Task>>& tasks,
                      const image::Process& p) {
  const pid_t tgid = p.pid;
  std::optional<RemotePage> page;  // the siginfo, in the process's memory
  auto put = [&](const std::vector<uint8_t>& info) {
    siginfo_t si;
    std::memset(&si, 0, sizeof si);
    std::memcpy(&si, info.data(), std::min(info.size(), sizeof si));
    if (!page) page.emplace(rs);
    return page->put(si);
  };
  // The kernel lets only the process itself queue a signal with a sender's
  // code (a kill's SI_USER, a tgkill's SI_TKILL): the leader for the
  // process, each thread for itself.
  for (const auto& info : p.threads.at(0).pending_shared)
    if (signo_of(info) == SIGTRAP)
      rs.checked("rt_sigqueueinfo(SIGTRAP)", SYS_rt_sigqueueinfo, static_cast<uint64_t>(tgid),
                 SIGTRAP, put(info));
  for (size_t i = 0; i < p.threads.size() && i < tasks.size(); i++)
    for (const auto& info : p.threads[i].pending) {
      if (signo_of(info) != SIGTRAP) continue;
      const uint64_t at = put(info);
      auto queue = [&](RemoteSyscalls& in) {
        in.checked(fmt::format("rt_tgsigqueueinfo({}, SIGTRAP)", p.threads[i].tid),
                   SYS_rt_tgsigqueueinfo, static_cast<uint64_t>(tgid),
                   static_cast<uint64_t>(p.threads[i].tid), SIGTRAP, at);
      };
      if (i == 0) {
        queue(rs);
      } else {
        RemoteSyscalls in(*tasks[i], rs.syscall_site());
        in.set_final_regs(Registers::from_bytes(p.threads[i].gpregs));
        queue(in);
      }
    }
}

void restore_process_signals(RemoteSyscalls& rs, RemotePage& page, SyscallBatch& batch,
                             const image::Process& p) {
  restore_posix_timers(rs, page, p);
  restore_sigactions(batch, p);
  restore_itimers(batch, p);
  const auto& leader = p.threads.at(0);
  requeue_signals(batch, p.pid, p.pid, leader.pending_shared, true);
  // Always: the skeleton ran with SIGKILL here until snap held it.
  batch.reserve(1, 0);
  batch.add("prctl(PR_SET_PDEATHSIG)", SYS_prctl, PR_SET_PDEATHSIG,
            static_cast<uint64_t>(p.pdeathsig.value_or(0)));
  vlog("restore: {} handler(s), {} POSIX timer(s), {} process-wide queued signal(s)",
       p.sigactions.size(), p.posix_timers.size(), leader.pending_shared.size());
}

void restore_thread_state(SyscallBatch& batch, pid_t tgid, const image::ThreadState& t) {
  if (!t.comm.empty()) {
    char name[16] = {};  // TASK_COMM_LEN
    t.comm.copy(name, sizeof name - 1);
    batch.reserve(1, sizeof name);
    batch.add("prctl(PR_SET_NAME)", SyscallBatch::kMayFail, SYS_prctl, PR_SET_NAME,
              batch.put(name, sizeof name).as_int());
  }
  restore_thread_bits(batch, t);
  requeue_signals(batch, tgid, t.tid, t.pending, false);
}

}  // namespace snap::restore
