#include "tracer/vdso.h"

#include <signal.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <chrono>

#include <fmt/core.h>

#include "base/error.h"
#include "tracer/proc.h"
#include "tracer/registers.h"
#include "tracer/remote.h"
#include "tracer/symbols.h"
#include "tracer/task.h"
#include "tracer/vdso_frames.h"

namespace snap {

const OwnVdso& own_vdso() {
  static const OwnVdso vdso = [] {
    OwnVdso v;
    v.base = getauxval(AT_SYSINFO_EHDR);
    if (!v.base) throw Error("snap has no vDSO (AT_SYSINFO_EHDR missing)");
    for (const auto& m : proc::read_mappings(::getpid(), proc::MapDetail::kRangesOnly))
      if (m.kind == image::MappingKind::Vdso) v.size = m.end - m.start;
    if (!v.size) throw Error("cannot find snap's own [vdso] mapping");
    v.bytes = reinterpret_cast<const uint8_t*>(v.base);
    return v;
  }();
  return vdso;
}

std::vector<VdsoFunction> vdso_functions(std::span<const uint8_t> image) {
  const ElfSymbols syms = ElfSymbols::from_memory(image, "[vdso]");
  // Symbol values are link-time addresses; the image's first byte is the
  // one its first segment loads at file offset 0.
  const auto base = syms.vaddr_of_file_offset(0);
  if (!base) throw Error("[vdso]: no segment loads its first page");
  std::vector<VdsoFunction> out;
  for (const auto& s : syms.sized_symbols())
    if (s.value >= *base && s.value - *base + s.size <= image.size())
      out.push_back({s.name, s.value - *base, s.size});
  return out;
}

VdsoCode::VdsoCode(pid_t pid, uint64_t start, uint64_t end,
                   const std::vector<image::Mapping>& mappings)
    : pid_(pid), start_(start), end_(end), mappings_(mappings) {}

VdsoCode::~VdsoCode() = default;

const VdsoFrames& VdsoCode::frames() {
  if (!frames_) {
    std::vector<uint8_t> image(end_ - start_);
    read_remote(pid_, remote_addr(start_), image.data(), image.size());
    frames_ = std::make_unique<VdsoFrames>(image, start_);
  }
  return *frames_;
}

bool VdsoCode::code_at(uint64_t addr) const {
  if (inside(addr)) return true;
  for (const auto& m : mappings_)
    if (addr >= m.start && addr < m.end) return (m.prot & PROT_EXEC) != 0;
  return false;
}

namespace {

// Where the return address is swapped to: not canonical (bits 63 to 47,
// or 56 with five-level page tables, differ), so a return there faults at
// once whatever the process has mapped: at the return itself (its stack
// pointer still at the slot) or at that address (past the return).
constexpr uint64_t kNowhere = 0xdead'0000'0000'0000ULL;

// si_code of a control-protection fault (a shadow stack's), which Debian
// 12's headers do not name yet.
constexpr int kSegvControlProtection = 10;

// Whether a fault at the swapped return reaches snap alone, by the
// thread's /proc status: SIGSEGV neither blocked in the thread nor ignored
// by the process (for the fault the kernel would unblock it, or reset its
// disposition), and no shadow stack (whose own check of the return would
// fail it, and which snap cannot pop).
bool return_may_fault(pid_t pid, pid_t tid) {
  const auto text = proc::try_read_file(fmt::format("/proc/{}/task/{}/status", pid, tid));
  if (!text) return false;
  const proc::Status st = proc::parse_status(*text);
  const uint64_t segv = 1ULL << (SIGSEGV - 1);
  const auto& f = st.x86_thread_features;
  return !(st.sig_blocked & segv) && !(st.sig_ignored & segv) &&
         std::find(f.begin(), f.end(), "shstk") == f.end();
}

// The next stop of `tid`, which runs, within `ms`; nullopt when none came.
std::optional<int> wait_stop_within(pid_t tid, int ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(tid, &status, __WALL | WNOHANG);
    if (r == tid) return status;
    if (r < 0 && errno != EINTR) throw SysError(fmt::format("waitpid(thread {})", tid), errno);
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    struct timespec pause = {0, 20 * 1000};
    ::nanosleep(&pause, nullptr);
  }
}

int wait_stop(pid_t tid) {
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(tid, &status, __WALL);
    if (r == tid) return status;
    if (r < 0 && errno != EINTR) throw SysError(fmt::format("waitpid(thread {})", tid), errno);
  }
}

// Runs `t`, inside the vDSO, on to the return through `slot` (see
// leave_vdso). The registers past that return, or nullopt where the thread
// did not get there within kVdsoReturnWaitMs (it is stopped again where it
// is) or a shadow stack refused the return (stopped at it). The slot holds
// its return address again either way.
std::optional<Registers> run_to_return(Task& t, remote_addr slot, uint64_t ret, VdsoCode& vdso) {
  const pid_t tid = t.tid();
  write_remote(tid, slot, &kNowhere, sizeof kNowhere);
  bool swapped = true;
  auto put_back = [&] {
    if (swapped) write_remote(tid, slot, &ret, sizeof ret);
    swapped = false;
  };
  try {
    t.resume(PTRACE_CONT, "running it on out of the vDSO");
    bool interrupted = false;
    bool over = false;  // the return faulted
    std::optional<Registers> out;
    for (;;) {
      const std::optional<int> status =
          interrupted ? wait_stop(tid) : wait_stop_within(tid, kVdsoReturnWaitMs);
      if (!status) {
        // Not back yet: stopped where it is (one more stop to collect).
        if (::ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) < 0)
          throw SysError(fmt::format("ptrace(PTRACE_INTERRUPT, thread {})", tid), errno);
        interrupted = true;
        continue;
      }
      if (WIFEXITED(*status) || WIFSIGNALED(*status)) {
        t.abandon();
        swapped = false;
        throw Error(fmt::format("thread {} ended while snap ran it out of the vDSO", tid));
      }
      const int sig = WSTOPSIG(*status), event = *status >> 16;
      if (event == PTRACE_EVENT_STOP) {
        // The interrupt: where it is now is where it stays.
        put_back();
        return out;
      }
      if (sig == SIGSEGV && !over) {
        Registers now = t.regs();
        siginfo_t si{};
        ::ptrace(PTRACE_GETSIGINFO, tid, nullptr, &si);
        const bool past = now.ip().as_int() == kNowhere && now.sp() == slot + 8;
        const bool at = vdso.inside(now.ip().as_int()) && now.sp() == slot;
        if (!past && !at)
          throw Error(fmt::format("thread {} faulted at {:#x} while snap ran it out of the vDSO",
                                  tid, now.ip().as_int()));
        // The fault is dropped: the thread is resumed later without it.
        put_back();
        over = true;
        if (at && si.si_code == kSegvControlProtection) {
          // A shadow stack's check failed the return: stopped before it.
        } else {
          now.set_ip(remote_addr(ret));
          now.set_sp(slot + 8);
          t.set_regs(now);
          out = now;
        }
        if (!interrupted) return out;
        // The interrupt is still to come: taken before the thread runs
        // again, at its next resume, which gives it at once.
        t.resume(PTRACE_CONT, "collecting the interrupt of the thread run out of the vDSO");
        continue;
      }
      // Another signal arrived for the thread: held back until detach.
      t.hold_signal(sig);
      t.resume(PTRACE_CONT, "running it on out of the vDSO");
    }
  } catch (...) {
    try {
      put_back();
    } catch (...) {
    }
    throw;
  }
}

}  // namespace

VdsoExit leave_vdso(Task& t, const Registers& regs, VdsoCode& vdso) {
  VdsoExit out{regs};
  if (!vdso.inside(regs.ip().as_int()) || t.job_control_stop() || regs.in_restartable_syscall())
    return out;
  // In one go, function by function (a helper returns into the vDSO).
  const bool may_fault = return_may_fault(vdso.pid(), t.tid());
  while (may_fault && out.returns < 4 && vdso.inside(out.regs.ip().as_int())) {
    const auto slot = vdso.frames().return_slot(out.regs);
    if (!slot) break;
    uint64_t ret = 0;
    read_remote(t.tid(), *slot, &ret, sizeof ret);
    if (!vdso.code_at(ret)) break;  // not a return address: the rules misread
    auto back = run_to_return(t, *slot, ret, vdso);
    if (!back) {
      out.regs = t.regs();  // stopped where it got to
      break;
    }
    out.returns++;
    out.regs = *back;
  }
  // One instruction at a time. vDSO functions are short and loop only while
  // the kernel updates the clock's data under them (a retry or two): a few
  // hundred instructions.
  while (vdso.inside(out.regs.ip().as_int()) && !out.regs.in_restartable_syscall() &&
         out.steps < kMaxVdsoSteps) {
    t.resume_and_wait(PTRACE_SINGLESTEP);  // other signals are held until detach
    out.steps++;
    out.regs = t.regs();
  }
  out.left = !vdso.inside(out.regs.ip().as_int());
  return out;
}

}  // namespace snap
