#include "parasite/thread_guard.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <span>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "parasite/parasite.h"
#include "parasite/sigframe.h"
#include "tracer/proc.h"
#include "tracer/remote.h"
#include "tracer/rseq.h"

namespace snap::parasite {

namespace {

constexpr uint64_t kRedZone = 128;
constexpr long kEnosys = -ENOSYS;

// `mov $15, %rax; syscall` (glibc, musl) or `mov $15, %eax; syscall`: the
// body of every x86_64 sa_restorer.
const std::vector<std::vector<uint8_t>>& sigreturn_patterns() {
  static const std::vector<std::vector<uint8_t>> kPatterns = {
      {0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05},
      {0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05},
  };
  return kPatterns;
}

std::optional<size_t> find_pattern(std::span<const uint8_t> text) {
  for (const auto& pat : sigreturn_patterns()) {
    auto it = std::search(text.begin(), text.end(), pat.begin(), pat.end());
    if (it != text.end()) return static_cast<size_t>(it - text.begin());
  }
  return std::nullopt;
}

bool is_gadget_at(pid_t pid, remote_addr at) {
  uint8_t b[9];
  for (const auto& pat : sigreturn_patterns()) {
    try {
      read_remote(pid, at, b, pat.size());
    } catch (const Error&) {
      return false;
    }
    if (std::equal(pat.begin(), pat.end(), b)) return true;
  }
  return false;
}

// A gadget in a file snap maps itself (its libc): the file and the offset
// in it. Found once, in snap's own memory, with no copy; any process that
// maps the same file there has it at the same place in its mapping.
struct FileGadget {
  uint64_t dev = 0, inode = 0, file_offset = 0;
};

const std::optional<FileGadget>& own_file_gadget() {
  static const std::optional<FileGadget> found = []() -> std::optional<FileGadget> {
    try {
      for (const auto& m : proc::read_executable_mappings(::getpid())) {
        if (m.kind != image::MappingKind::File || m.path.find("libc") == std::string::npos ||
            !(m.prot & PROT_READ))
          continue;
        std::span<const uint8_t> text(reinterpret_cast<const uint8_t*>(m.start), m.end - m.start);
        if (auto at = find_pattern(text)) return FileGadget{m.dev, m.inode, m.pgoff + *at};
      }
    } catch (const std::exception&) {
    }
    return std::nullopt;
  }();
  return found;
}

}  // namespace

void prepare_sigreturn_gadget() { own_file_gadget(); }

// The gadget in the target, searched in its executable file mappings, libc
// first: where snap's own libc has one, if the target maps that file;
// else by reading its code (a costly copy of a few MiB, made while the job
// is stopped, so the last place found in each process is kept and checked
// first next time).
std::optional<remote_addr> find_sigreturn_gadget(pid_t pid,
                                                 const std::vector<image::Mapping>* known) {
  static std::mutex mu;
  static std::map<pid_t, remote_addr> last;
  {
    std::lock_guard lock(mu);
    auto it = last.find(pid);
    if (it != last.end() && is_gadget_at(pid, it->second)) return it->second;
  }
  auto remember = [&](remote_addr at) {
    std::lock_guard lock(mu);
    last[pid] = at;
    return at;
  };
  // The mappings the dump read already, while the process has been stopped
  // since: /proc/PID/maps is not read again (MiBs for a large process).
  std::vector<image::Mapping> maps;
  if (known) {
    for (const auto& m : *known)
      if (m.prot & PROT_EXEC) maps.push_back(m);
  } else {
    maps = proc::read_executable_mappings(pid);
  }
  if (const auto& own = own_file_gadget())
    for (const auto& m : maps)
      if (m.kind == image::MappingKind::File && m.dev == own->dev && m.inode == own->inode &&
          own->file_offset >= m.pgoff && own->file_offset < m.pgoff + (m.end - m.start)) {
        remote_addr at = remote_addr(m.start) + (own->file_offset - m.pgoff);
        if (is_gadget_at(pid, at)) return remember(at);
      }
  std::stable_partition(maps.begin(), maps.end(), [](const image::Mapping& m) {
    return m.path.find("libc") != std::string::npos;
  });
  for (const auto& m : maps) {
    if (!(m.prot & PROT_EXEC) || m.kind != image::MappingKind::File) continue;
    if (m.end - m.start > (uint64_t{64} << 20)) continue;
    std::vector<uint8_t> text(m.end - m.start);
    try {
      read_remote(pid, remote_addr(m.start), text.data(), text.size());
    } catch (const Error&) {
      continue;
    }
    if (auto at = find_pattern(text)) return remember(remote_addr(m.start) + *at);
  }
  return std::nullopt;
}

namespace {

std::string regs_diff(const user_regs_struct& a, const user_regs_struct& b) {
  std::string out;
  auto cmp = [&](const char* name, unsigned long long x, unsigned long long y) {
    if (x != y) out += fmt::format(" {}={:#x} (expected {:#x})", name, x, y);
  };
#define SNAP_CMP(f) cmp(#f, a.f, b.f)
  SNAP_CMP(r15); SNAP_CMP(r14); SNAP_CMP(r13); SNAP_CMP(r12); SNAP_CMP(rbp); SNAP_CMP(rbx);
  SNAP_CMP(r11); SNAP_CMP(r10); SNAP_CMP(r9);  SNAP_CMP(r8);  SNAP_CMP(rax); SNAP_CMP(rcx);
  SNAP_CMP(rdx); SNAP_CMP(rsi); SNAP_CMP(rdi); SNAP_CMP(rip); SNAP_CMP(cs);  SNAP_CMP(rsp);
  SNAP_CMP(ss);  SNAP_CMP(fs_base); SNAP_CMP(gs_base);
#undef SNAP_CMP
  // The arithmetic flags and DF; rt_sigreturn keeps the kernel's own bits.
  cmp("eflags", a.eflags & 0xcd5, b.eflags & 0xcd5);
  return out;
}

}  // namespace

// ---- ThreadGuard ----------------------------------------------------------------

ThreadGuard::ThreadGuard(Task& task, std::optional<remote_addr> gadget)
    : ThreadGuard(task, gadget, DeferFrame{}) {
  if (!unwritten_.empty()) write_frame();
}

void ThreadGuard::write_frame() {
  try {
    std::vector<uint8_t> under(unwritten_.size());
    read_remote(task_.tid(), frame_, under.data(), under.size());
    write_remote(task_.tid(), frame_, unwritten_.data(), unwritten_.size());
    under_frame_ = std::move(under);
    unwritten_.clear();
  } catch (const Error& e) {
    frame_not_written(e.what());
  }
}

void ThreadGuard::put_back_under_frame() noexcept {
  if (under_frame_.empty()) return;
  std::vector<uint8_t> under = std::move(under_frame_);
  under_frame_.clear();
  try {
    write_remote(task_.tid(), frame_, under.data(), under.size());
  } catch (const Error& e) {
    if (!task_.let_go())
      warn("pid {}: the {} bytes below its stack pointer that snap's sigreturn frame covered "
           "could not be put back: {}",
           task_.tid(), under.size(), e.what());
  }
}

ThreadGuard::ThreadGuard(Task& task, std::optional<remote_addr> gadget, DeferFrame)
    : task_(task), gadget_(gadget) {
  // What the dump's collect read at this stop, if it did; else read now.
  Registers orig;
  if (auto known = task.take_stop_state()) {
    orig = known->regs;
    xsave_ = std::move(known->xsave);
    mask_ = known->mask;
  } else {
    // Out of a restartable sequence it was stopped in (tracer/rseq.h).
    orig = leave_rseq_critical_section(task, task.regs(), read_rseq_state(task));
    xsave_ = task.xsave();
    mask_ = task.signal_mask();
  }
  clean_ = orig.with_restart_applied();
  if (gadget_) build_frame(orig);
}

void ThreadGuard::build_frame(const Registers& orig) {
  // The frame goes below the red zone, 64-byte aligned, on the thread's own
  // stack: memory the ABI lets anyone clobber.
  uint64_t top = orig.sp().as_int() - kRedZone;
  uint64_t where = (top - (sigframe_layout::kFixedSize + xsave_.size() + 256)) & ~uint64_t{63};
  while (where + sigreturn_frame_size(remote_addr(where), xsave_.size()) > top) where -= 64;
  frame_ = remote_addr(where);
  auto f = build_sigreturn_frame(orig.raw(), xsave_, mask_, frame_);
  uint64_t g = gadget_->as_int();
  std::memcpy(f.bytes.data(), &g, sizeof g);  // pretcode: where a `ret` goes
  unwritten_ = std::move(f.bytes);
}

void ThreadGuard::frame_not_written(const std::string& why) {
  warn("pid {}: no room for a sigreturn frame below its stack pointer ({}); the parasite "
       "runs without protection against snap dying while it injects",
       task_.tid(), why);
  gadget_.reset();
  unwritten_.clear();
}

namespace {

// Each of `local` to (`write`) or from its `remote` in process `pid`, 512
// to a call (IOV_MAX is 1024): whether every byte moved.
bool moved_all(pid_t pid, bool write, const std::vector<iovec>& local,
               const std::vector<iovec>& remote) {
  constexpr size_t kBatch = 512;
  for (size_t i = 0; i < local.size(); i += kBatch) {
    const size_t k = std::min(kBatch, local.size() - i);
    size_t total = 0;
    for (size_t j = i; j < i + k; j++) total += local[j].iov_len;
    const ssize_t done = write ? ::process_vm_writev(pid, &local[i], k, &remote[i], k, 0)
                               : ::process_vm_readv(pid, &local[i], k, &remote[i], k, 0);
    if (done != static_cast<ssize_t>(total)) return false;
  }
  return true;
}

}  // namespace

void ThreadGuard::write_frames(pid_t pid, const std::vector<std::unique_ptr<ThreadGuard>>& guards) {
  std::vector<ThreadGuard*> todo;
  for (const auto& g : guards)
    if (!g->unwritten_.empty()) todo.push_back(g.get());
  std::vector<iovec> frames, saved, remote;
  std::vector<std::vector<uint8_t>> under(todo.size());
  for (size_t j = 0; j < todo.size(); j++) {
    ThreadGuard& g = *todo[j];
    under[j].resize(g.unwritten_.size());
    saved.push_back({under[j].data(), under[j].size()});
    frames.push_back({g.unwritten_.data(), g.unwritten_.size()});
    remote.push_back({reinterpret_cast<void*>(g.frame_.as_int()), g.unwritten_.size()});
  }
  // What the frames cover first (put back when the guards end), then the
  // frames: a call each for all.
  const bool read = moved_all(pid, false, saved, remote);
  const bool written = read && moved_all(pid, true, frames, remote);
  for (size_t j = 0; j < todo.size(); j++) {
    ThreadGuard& g = *todo[j];
    if (written) {
      g.under_frame_ = std::move(under[j]);
      g.unwritten_.clear();
    } else if (!read) {
      g.write_frame();  // each on its own, as the constructor does
    } else {
      // Some did not go (a frame past the end of its stack's mapping, or
      // no process_vm_writev here): each on its own, with what it covered
      // as read above (a write that went part of the way changed some).
      try {
        write_remote(g.task_.tid(), g.frame_, g.unwritten_.data(), g.unwritten_.size());
        g.under_frame_ = std::move(under[j]);
        g.unwritten_.clear();
      } catch (const Error& e) {
        g.frame_not_written(e.what());
      }
    }
  }
}

void ThreadGuard::put_back_under_frames(pid_t pid,
                                        const std::vector<std::unique_ptr<ThreadGuard>>& guards) {
  std::vector<ThreadGuard*> todo;
  std::vector<iovec> local, remote;
  for (const auto& g : guards)
    if (!g->parked_ && !g->under_frame_.empty()) {
      todo.push_back(g.get());
      local.push_back({g->under_frame_.data(), g->under_frame_.size()});
      remote.push_back({reinterpret_cast<void*>(g->frame_.as_int()), g->under_frame_.size()});
    }
  // Where not all went, each goes again on its own (the destructors).
  if (moved_all(pid, true, local, remote))
    for (ThreadGuard* g : todo) g->under_frame_.clear();
}

ThreadGuard::~ThreadGuard() {
  try {
    release();
  } catch (const std::exception& e) {
    // Not back in its own context: the frame may still lead it there.
    warn("pid {}: could not give the thread its state back: {}", task_.tid(), e.what());
    return;
  }
  put_back_under_frame();
}

void ThreadGuard::park() {
  if (gadget_) {
    Registers r = clean_;
    r.set_ip(*gadget_);
    r.set_sp(sigreturn_sp());
    r.raw().orig_rax = static_cast<uint64_t>(-1);
    task_.set_regs(r);
  }
  // With the registers at the gadget first: dying in between returns the
  // thread to its original context, mask included.
  task_.set_signal_mask(~uint64_t{0});
  parked_ = true;
}

void ThreadGuard::release() {
  if (!parked_) return;
  // Mask first, while the registers still lead to rt_sigreturn. The XSAVE
  // area is as it was: the blob's code touches no x87, SSE or AVX register
  // (src/parasite/meson.build), nor do system calls or the rt_sigreturn of
  // the frame built from it.
  task_.set_signal_mask(mask_);
  task_.set_regs(clean_);
  parked_ = false;
}

void ThreadGuard::run_until_sigreturn(remote_addr entry) {
  start(entry);
  while (!wait_and_step()) {}
}

int ThreadGuard::wait_stop() {
  int status = 0;
  pid_t w;
  do w = ::waitpid(task_.tid(), &status, __WALL);
  while (w < 0 && errno == EINTR);
  if (w < 0) throw SysError(fmt::format("waitpid(pid {}) running the parasite", task_.tid()), errno);
  return status;
}

bool ThreadGuard::wait_and_step() { return on_stop(wait_stop()); }

bool ThreadGuard::wait_free() { return on_free_stop(wait_stop()); }

void ThreadGuard::start(remote_addr entry, uint64_t arg, remote_addr sp) {
  point_at(entry, arg, sp);
  resume();
}

void ThreadGuard::point_at(remote_addr entry, uint64_t arg, remote_addr sp) {
  Registers r = clean_;
  r.set_ip(entry);
  if (sp.as_int()) r.set_sp(sp);
  r.raw().rdi = arg;
  r.raw().orig_rax = static_cast<uint64_t>(-1);
  task_.set_regs(r);
  in_sigreturn_ = false;
  if (parked_) return;
  // Parked straight at the entry (one call less than park() and then
  // this), registers first: should snap die before the mask is set, the
  // thread runs the entry with its own mask, and the entry ends in the
  // frame's rt_sigreturn as it does when snap dies later.
  parked_ = true;
  task_.set_signal_mask(~uint64_t{0});
}

void ThreadGuard::resume() { task_.resume(PTRACE_SYSCALL, "running the parasite"); }

void ThreadGuard::fail_on_fault_or_death(int status) {
  const pid_t tid = task_.tid();
  if (WIFEXITED(status) || WIFSIGNALED(status)) {
    task_.abandon();
    parked_ = false;
    throw Error(fmt::format("pid {} died while the parasite ran in it", tid));
  }
  if (!WIFSTOPPED(status)) return;
  const int sig = WSTOPSIG(status);
  if ((status >> 16) == 0 &&
      (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGTRAP || sig == SIGFPE)) {
    Registers at = task_.regs();
    task_.set_regs(clean_);  // put it back by hand; release() restores the rest
    throw Error(fmt::format("the parasite in pid {} stopped with signal {} at {:#x}", tid, sig,
                            at.ip().as_int()),
                "the target was put back as it was; please report this");
  }
}

void ThreadGuard::resume_free() { task_.resume(PTRACE_CONT, "running the parasite"); }

void ThreadGuard::interrupt() {
  if (::ptrace(PTRACE_INTERRUPT, task_.tid(), nullptr, nullptr) < 0)
    throw SysError(fmt::format("ptrace(PTRACE_INTERRUPT, pid {}) stopping the parasite",
                               task_.tid()),
                   errno);
  interrupted_ = true;
}

bool ThreadGuard::on_free_stop(int status) {
  fail_on_fault_or_death(status);
  // The stop interrupt() asked for. In a process stopped by job control it
  // is reported with the stop signal (SIGSTOP...), not SIGTRAP; any
  // PTRACE_EVENT_STOP after interrupt() means the thread is stopped now.
  if (WIFSTOPPED(status) && (status >> 16) == PTRACE_EVENT_STOP && interrupted_) {
    interrupted_ = false;
    return true;
  }
  // A system-call stop left from the stepped start, a stop signal (all
  // others are blocked in the blob), or the like: on, without stops.
  hold_stop_signal(status);
  resume_free();
  return false;
}

void ThreadGuard::hold_stop_signal(int status) {
  if (!WIFSTOPPED(status) || (status >> 16) != 0 || WSTOPSIG(status) == (SIGTRAP | 0x80)) return;
  // A signal-delivery stop: a stop signal (SIGSTOP; the others are blocked
  // in the blob) sent to the job while the parasite ran, Slurm's suspend
  // say. Held back until the thread is let go, and the job stops then.
  vlog("pid {}: signal {} arrived while the parasite ran: delivered when snap lets go",
       task_.tid(), WSTOPSIG(status));
  task_.hold_signal(WSTOPSIG(status));
}

bool ThreadGuard::on_stop(int status) {
  const pid_t tid = task_.tid();
  fail_on_fault_or_death(status);
  if (!WIFSTOPPED(status)) {
    resume();
    return false;
  }
  int sig = WSTOPSIG(status);
  if (sig == (SIGTRAP | 0x80)) {
    Registers now = task_.regs();
    if (!in_sigreturn_) {
      if (syscall_stop_) syscall_stop_(now);
      in_sigreturn_ = now.original_syscallno() == SYS_rt_sigreturn && now.syscall_result() == kEnosys;
      resume();
      return false;
    }
    // Exit stop of rt_sigreturn: the original context.
    parked_ = false;  // the frame restored the original signal mask
    auto diff = regs_diff(now.raw(), clean_.raw());
    task_.set_regs(clean_);  // orig_rax and any difference found
    if (!diff.empty())
      throw Error(fmt::format("pid {}: registers after the parasite differ:{}", tid, diff),
                  "they were reset to the saved values; please report this");
    return true;
  }
  // A group stop or other event: go on. All signals are blocked; only
  // SIGSTOP gets here.
  if ((status >> 16) == PTRACE_EVENT_CLONE) {
    unsigned long msg = 0;
    if (::ptrace(PTRACE_GETEVENTMSG, tid, nullptr, &msg) == 0) cloned_ = static_cast<pid_t>(msg);
  }
  hold_stop_signal(status);
  resume();
  return false;
}

GuardedSyscalls::GuardedSyscalls(Task& task)
    : guard_(task, find_sigreturn_gadget(task.tid())) {
  auto ret_site = find_syscall_ret_site(task.tid());
  guard_.park();
  rs_.emplace(task, ret_site ? *ret_site : find_syscall_site(task.tid()));
  healing_ = guard_.protected_by_frame() && ret_site;
  if (healing_) rs_->set_syscall_sp(guard_.frame());
}

std::vector<uint8_t> GuardedSyscalls::run_sequence(const std::string& name,
                                                   std::span<const uint8_t> code,
                                                   std::vector<uint8_t> data,
                                                   std::function<void(const Registers&)> on_syscall) {
  constexpr uint64_t kPage = 4096;
  const pid_t tid = guard_.task().tid();
  if (!healing_)
    throw Error(fmt::format("pid {}: no way back to its own context for the {}", tid, name));
  if (code.size() > kPage || data.size() > kPage) throw std::logic_error(name + " too large");
  const remote_addr base(static_cast<uint64_t>(
      rs_->checked(fmt::format("mmap of the {}", name), SYS_mmap, 0, 2 * kPage,
                   PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, static_cast<uint64_t>(-1), 0)));
  const remote_addr at = base + static_cast<int64_t>(kPage);
  try {
    write_remote(tid, base, code.data(), code.size());
    rs_->checked(fmt::format("mprotect of the {}", name), SYS_mprotect, base.as_int(), kPage,
                 PROT_READ | PROT_EXEC);
    if (!data.empty()) write_remote(tid, at, data.data(), data.size());
    guard_.on_syscall_stop(std::move(on_syscall));
    phase(tid, name.c_str());
    guard_.start(base, at.as_int(), guard_.frame());
    while (!guard_.wait_and_step()) {}
    phase(tid, (name + "-done").c_str());
    guard_.on_syscall_stop(nullptr);
    guard_.park();  // for the munmap below, and until this scope ends
    if (!data.empty()) read_remote(tid, at, data.data(), data.size());
  } catch (...) {
    guard_.on_syscall_stop(nullptr);
    rs_->syscall(SYS_munmap, base.as_int(), 2 * kPage);
    throw;
  }
  rs_->checked(fmt::format("munmap of the {}", name), SYS_munmap, base.as_int(), 2 * kPage);
  return data;
}

}  // namespace snap::parasite
