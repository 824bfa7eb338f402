#include "parasite/snapshot.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstring>
#include <sstream>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "parasite/keep_out.h"
#include "parasite/parasite.h"
#include "tracer/pid_view.h"
#include "tracer/proc.h"
#include "tracer/remote.h"

namespace snap::parasite {

namespace {

// Back to the seize's options after the clone (never throws: on a way out).
void seize_options(Task& leader) noexcept {
  try {
    leader.set_options(PTRACE_O_TRACESYSGOOD);
  } catch (...) {
  }
}

}  // namespace

bool MemorySnapshot::differs_in_child(const image::Mapping& m) {
  // Shared memory is not copied on write (and fork does not even copy its
  // page tables, so the child's pagemap shows none of it): it is read from
  // the job while it is stopped, like MADV_DONTFORK / MADV_WIPEONFORK areas.
  return m.shared || image::has_vmflag(m.vmflags, "dc") || image::has_vmflag(m.vmflags, "wf");
}

bool MemorySnapshot::read_from_job(const image::Mapping& m) const {
  return differs_in_child(m) || std::binary_search(kept_out_.begin(), kept_out_.end(), m.start);
}

std::unique_ptr<MemorySnapshot> MemorySnapshot::take(Task& leader,
                                                     const std::vector<image::Mapping>& mappings,
                                                     const std::vector<uint64_t>& thread_sps,
                                                     uint64_t leader_rseq,
                                                     const std::vector<uint64_t>& read_before) {
  pid_t child = -1;
  std::vector<uint64_t> kept_out;
  // The leader's sigreturn frame is in its memory when it forks: what the
  // frame covers goes back into the child's copy too (thread_guard.h).
  remote_addr frame;
  std::vector<uint8_t> under_frame;
  {
    GuardedSyscalls guarded(leader);
    auto& rs = guarded.rs();
    frame = guarded.guard().frame();
    under_frame = guarded.guard().under_frame();
    // What to keep out, only where the sequence that does it has a way back.
    std::vector<KeepOut> runs;
    if (guarded.healing())
      runs = keep_out(leader.tid(), mappings, thread_sps, leader_rseq, read_before);
    else
      vlog("pid {}: nothing is kept out of the snapshot (no way back for a keep-out sequence): "
           "thread stacks and sparse reservations stay in it", leader.tid());
    // Only for this call: report the clone so the child is born traced.
    leader.set_options(PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE);
    long rc;
    try {
      if (runs.empty()) {
        constexpr uint64_t kChildFaultingSp = 8;
        rc = rs.syscall(SYS_clone, 0 /* no flags, exit signal 0 */, kChildFaultingSp, 0, 0, 0);
        if (rc > 0) child = static_cast<pid_t>(rs.last_event_message(PTRACE_EVENT_CLONE));
      } else {
        KeptOutClone got = clone_keeping_out(guarded, runs);
        rc = got.rc;
        child = got.child;
        kept_out = std::move(got.kept_out);
        if (got.sparse)
          vlog("pid {}: {} sparse reservation(s) kept out of the snapshot, read while stopped",
               leader.tid(), got.sparse);
        if (got.stacks)
          vlog("pid {}: {} thread stack and guard mapping(s) kept out of the snapshot, read "
               "while stopped", leader.tid(), got.stacks);
        if (got.read_before)
          vlog("pid {}: {} mapping(s) read before the stop kept out of the snapshot: what the job "
               "wrote of them since is read while stopped", leader.tid(), got.read_before);
        if (got.hugetlb)
          vlog("pid {}: {} mapping(s) of hugetlb memory kept out of the snapshot, read while "
               "stopped", leader.tid(), got.hugetlb);
        if (got.ranges)
          vlog("pid {}: {} mapping(s) kept out of the snapshot with {} madvise range(s)",
               leader.tid(), kept_out.size(), got.ranges);
      }
    } catch (...) {
      seize_options(leader);
      throw;
    }
    seize_options(leader);
    if (rc < 0) {
      vlog("pid {}: no copy-on-write snapshot ({}); reading memory while stopped", leader.tid(),
           std::strerror(static_cast<int>(-rc)));
      return nullptr;
    }
    if (child <= 0) child = static_cast<pid_t>(rc);
  }
  // The child starts in a ptrace stop; make sure snap's death kills it
  // (and see its system-call stops as such: discard() runs calls in it).
  int status = 0;
  while (::waitpid(child, &status, __WALL) < 0 && errno == EINTR) {}
  std::unique_ptr<MemorySnapshot> snap(new MemorySnapshot(child, std::move(kept_out)));
  if (!under_frame.empty()) {
    // The child has the job's mappings, where the frame was written: one it
    // cannot be written to now was kept out of it, and is read from the
    // job, which has its bytes back already.
    iovec local{under_frame.data(), under_frame.size()};
    iovec remote{reinterpret_cast<void*>(frame.as_int()), under_frame.size()};
    if (::process_vm_writev(child, &local, 1, &remote, 1, 0) !=
        static_cast<ssize_t>(under_frame.size()))
      vlog("pid {}: its sigreturn frame at {:#x} is not in its snapshot (kept out)", leader.tid(),
           frame.as_int());
  }
  // A job under seccomp of its own: the child is too (discard() asks it
  // for madvise).
  const long suspend = leader.seccomp_suspended() ? PTRACE_O_SUSPEND_SECCOMP : 0;
  if (::ptrace(PTRACE_SETOPTIONS, child, nullptr,
               reinterpret_cast<void*>(PTRACE_O_EXITKILL | PTRACE_O_TRACESYSGOOD | suspend)) < 0)
    throw SysError("ptrace(PTRACE_SETOPTIONS, snapshot pid " + std::to_string(child) + ")", errno);
  vlog("pid {}: copy-on-write snapshot is pid {}", leader.tid(), child);
  return snap;
}

int MemorySnapshot::collect_leftovers(Task& leader, const std::vector<pid_t>& left) {
  if (left.empty()) return 0;
  GuardedSyscalls guarded(leader);
  int n = 0;
  for (pid_t c : left) {
    // wait4 runs in the job: the child by its id there (pid_view.h).
    const pid_t own = pidview::own_pid(c);
    n += guarded.rs().syscall(SYS_wait4, static_cast<uint64_t>(own), 0, WNOHANG | __WALL, 0) == own;
  }
  vlog("pid {}: collected {} snapshot(s) left by an interrupted dump", leader.tid(), n);
  return n;
}

MemorySnapshot::MemorySnapshot(pid_t child, std::vector<uint64_t> kept_out)
    : child_(child), task_(Task::adopt_stopped(child)), kept_out_(std::move(kept_out)) {}

long MemorySnapshot::madvise_dontneed(uint64_t start, uint64_t end) {
  if (!rs_) rs_ = std::make_unique<RemoteSyscalls>(*task_, find_syscall_site(child_));
  return rs_->syscall(SYS_madvise, start, end - start, MADV_DONTNEED);
}

bool MemorySnapshot::discard(uint64_t start, uint64_t end) {
  if (discard_failed_ || start >= end) return false;
  try {
    long rc = madvise_dontneed(start, end);
    if (rc < 0 && rc != -ENOMEM) throw SysError("madvise(MADV_DONTNEED)", static_cast<int>(-rc));
    return true;
  } catch (const std::exception& e) {
    discard_failed_ = true;
    vlog("snapshot {}: cannot release pages already read ({}): they stay until the end",
         child_, e.what());
    return false;
  }
}

bool MemorySnapshot::discard(const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  if (ranges.empty() || discard_failed_) return false;
  if (ranges.size() == 1) return discard(ranges[0].first, ranges[0].second);
  try {
    long rc = madvise_dontneed(ranges.front().first, ranges.back().second);
    if (rc == 0 || rc == -ENOMEM) return true;  // ENOMEM: holes in the span
  } catch (const std::exception& e) {
    discard_failed_ = true;
    vlog("snapshot {}: cannot release pages already read ({}): they stay until the end",
         child_, e.what());
    return false;
  }
  bool ok = true;
  for (const auto& [start, end] : ranges) ok = discard(start, end) && ok;
  return ok;
}

uint64_t MemorySnapshot::private_bytes() const {
  auto text = proc::try_read_file("/proc/" + std::to_string(child_) + "/smaps_rollup");
  if (!text) return 0;
  std::istringstream in(*text);
  std::string line;
  uint64_t kb = 0;
  while (std::getline(in, line)) {
    if (line.rfind("Private_Dirty:", 0) == 0 || line.rfind("Private_Clean:", 0) == 0)
      kb += std::strtoull(line.c_str() + line.find(':') + 1, nullptr, 10);
  }
  return kb << 10;
}

void MemorySnapshot::end() {
  if (ended_) return;
  ended_ = true;
  // wait4 runs in the job: the child by its id there (pid_view.h).
  own_pid_ = child_;
  try {
    own_pid_ = pidview::own_pid(child_);
  } catch (const std::exception& e) {
    vlog("snapshot process {}: {}", child_, e.what());
  }
  try {
    rs_.reset();  // the child gets its registers back while it still can
  } catch (const std::exception& e) {
    vlog("snapshot {}: {}", child_, e.what());
  }
  task_->abandon();
  ::kill(child_, SIGKILL);
}

void MemorySnapshot::kill_child() {
  end();
  int status = 0;
  while (::waitpid(child_, &status, __WALL) < 0 && errno == EINTR) {}
}

void MemorySnapshot::release(pid_t job_pid) {
  if (released_) return;
  released_ = true;
  kill_child();
  // The job is the child's parent: let it collect the zombie, quietly.
  try {
    auto leader = Task::seize_and_stop(job_pid);
    GuardedSyscalls guarded(*leader);
    guarded.rs().syscall(SYS_wait4, static_cast<uint64_t>(own_pid_), 0, __WALL, 0);
  } catch (const std::exception& e) {
    // A job that has ended meanwhile (ptrace refuses a zombie: EPERM): its
    // children, this zombie with them, go to whoever reaps its orphans.
    if (proc::has_ended(job_pid))
      vlog("snapshot process {} of pid {} left to be reaped with the job, which ended", child_,
           job_pid);
    else
      warn("could not collect snapshot process {} in pid {}: {}", child_, job_pid, e.what());
  }
}

MemorySnapshot::~MemorySnapshot() {
  if (!released_) kill_child();
}

}  // namespace snap::parasite
