#include "parasite/parasite.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fmt/core.h>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"
#include "parasite/embedded_blob.h"
#include "parasite/sigframe.h"
#include "tracer/pid_view.h"
#include "tracer/proc.h"
#include "tracer/remote.h"

namespace snap::parasite {

namespace {

constexpr uint64_t kRedZone = 128;
constexpr long kEnosys = -ENOSYS;

// Phases, appended as "MONOTONIC_SECONDS PID PHASE" to the file named by
// $SNAP_PHASE_LOG (for the fault tests: they kill snap at random instants
// and want to know where it was).
void phase(pid_t pid, const char* what) {
  static int fd = [] {
    const char* path = std::getenv("SNAP_PHASE_LOG");
    return path ? ::open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600) : -1;
  }();
  if (fd < 0) return;
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  auto line = fmt::format("{}.{:09} {} {}\n", now.tv_sec, now.tv_nsec, pid, what);
  (void)!::write(fd, line.data(), line.size());
}

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

// The gadget in the target, searched in its executable file mappings, libc
// first: where snap's own libc has one, if the target maps that file;
// else by reading its code (a costly copy of a few MiB, made while the job
// is stopped, so the last place found in each process is kept and checked
// first next time).
std::optional<remote_addr> find_sigreturn_gadget(pid_t pid,
                                                 const std::vector<image::Mapping>* known = nullptr) {
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
    : task_(task), gadget_(gadget) {
  Registers orig = task.regs();
  clean_ = orig.with_restart_applied();
  xsave_ = task.xsave();
  mask_ = task.signal_mask();
  if (!gadget_) return;
  // The frame goes below the red zone, 64-byte aligned, on the thread's own
  // stack: memory the ABI lets anyone clobber.
  uint64_t top = orig.sp().as_int() - kRedZone;
  uint64_t where = (top - (sigframe_layout::kFixedSize + xsave_.size() + 256)) & ~uint64_t{63};
  while (where + sigreturn_frame_size(remote_addr(where), xsave_.size()) > top) where -= 64;
  frame_ = remote_addr(where);
  auto f = build_sigreturn_frame(orig.raw(), xsave_, mask_, frame_);
  uint64_t g = gadget_->as_int();
  std::memcpy(f.bytes.data(), &g, sizeof g);  // pretcode: where a `ret` goes
  try {
    write_remote(task.tid(), frame_, f.bytes.data(), f.bytes.size());
  } catch (const Error& e) {
    warn("pid {}: no room for a sigreturn frame below its stack pointer ({}); the parasite "
         "runs without protection against snap dying while it injects",
         task.tid(), e.what());
    gadget_.reset();
  }
}

ThreadGuard::~ThreadGuard() {
  try {
    release();
  } catch (const std::exception& e) {
    warn("pid {}: could not give the thread its state back: {}", task_.tid(), e.what());
  }
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
  // Mask first, while the registers still lead to rt_sigreturn.
  task_.set_signal_mask(mask_);
  task_.set_regs(clean_);
  task_.set_xsave(xsave_);
  parked_ = false;
}

void ThreadGuard::run_until_sigreturn(remote_addr entry) {
  start(entry);
  while (!wait_and_step()) {}
}

bool ThreadGuard::wait_and_step() {
  int status = 0;
  pid_t w;
  do w = ::waitpid(task_.tid(), &status, __WALL);
  while (w < 0 && errno == EINTR);
  if (w < 0) throw SysError(fmt::format("waitpid(pid {}) running the parasite", task_.tid()), errno);
  return on_stop(status);
}

void ThreadGuard::start(remote_addr entry, uint64_t arg, remote_addr sp) {
  if (!parked_) park();
  Registers r = clean_;
  r.set_ip(entry);
  if (sp.as_int()) r.set_sp(sp);
  r.raw().rdi = arg;
  r.raw().orig_rax = static_cast<uint64_t>(-1);
  task_.set_regs(r);
  in_sigreturn_ = false;
  resume();
}

void ThreadGuard::resume() {
  if (::ptrace(PTRACE_SYSCALL, task_.tid(), nullptr, nullptr) < 0)
    throw SysError(fmt::format("ptrace(PTRACE_SYSCALL, pid {}) running the parasite", task_.tid()),
                   errno);
}

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

void ThreadGuard::resume_free() {
  if (::ptrace(PTRACE_CONT, task_.tid(), nullptr, nullptr) < 0)
    throw SysError(fmt::format("ptrace(PTRACE_CONT, pid {}) running the parasite", task_.tid()),
                   errno);
}

void ThreadGuard::interrupt() {
  if (::ptrace(PTRACE_INTERRUPT, task_.tid(), nullptr, nullptr) < 0)
    throw SysError(fmt::format("ptrace(PTRACE_INTERRUPT, pid {}) stopping the parasite",
                               task_.tid()),
                   errno);
  interrupted_ = true;
}

bool ThreadGuard::on_free_stop(int status) {
  fail_on_fault_or_death(status);
  if (WIFSTOPPED(status) && (status >> 16) == PTRACE_EVENT_STOP && WSTOPSIG(status) == SIGTRAP &&
      interrupted_) {
    interrupted_ = false;
    return true;
  }
  // A system-call stop left from the stepped start, a group stop (SIGSTOP:
  // all other signals are blocked in the blob; the job sees it later), or
  // the like: on, without stops.
  if (WIFSTOPPED(status) && (status >> 16) == 0 && WSTOPSIG(status) != (SIGTRAP | 0x80))
    warn("pid {}: signal {} arrived while the parasite ran; it is dropped", task_.tid(),
         WSTOPSIG(status));
  resume_free();
  return false;
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
  // SIGSTOP gets here. Let the job see it later.
  if ((status >> 16) == 0) warn("pid {}: signal {} arrived while the parasite ran; it is dropped", tid, sig);
  resume();
  return false;
}

// ---- Parasite -----------------------------------------------------------------

GuardedSyscalls::GuardedSyscalls(Task& task)
    : guard_(task, find_sigreturn_gadget(task.tid())) {
  auto ret_site = find_syscall_ret_site(task.tid());
  guard_.park();
  rs_.emplace(task, ret_site ? *ret_site : find_syscall_site(task.tid()));
  healing_ = guard_.protected_by_frame() && ret_site;
  if (healing_) rs_->set_syscall_sp(guard_.frame());
}

Parasite::Parasite(SeizedTree::Proc& proc, const std::vector<image::Mapping>* mappings)
    : proc_(proc) {
  const pid_t pid = proc.pid;
  Task& leader = *proc.tasks.at(0);
  gadget_ = find_sigreturn_gadget(pid, mappings);
  ret_site_ = find_syscall_ret_site(pid);
  if (!gadget_ || !ret_site_)
    vlog("pid {}: no {}; an orphaned thread would not heal while snap injects", pid,
         gadget_ ? "vDSO syscall followed by ret" : "rt_sigreturn gadget");
  phase(pid, "parasite-inject");
  guards_.push_back(std::make_unique<ThreadGuard>(leader, gadget_));
  ThreadGuard& g = *guards_[0];
  g.park();
  const auto elf = embedded_blob();
  // The image, then a slot per thread but the leader (run_thread_entries).
  const uint64_t image_size = (prepare_blob(elf, remote_addr(0)).size() + 4095) & ~uint64_t{4095};
  const uint64_t size = image_size + (proc.tasks.size() - 1) * SNAP_PARASITE_THREAD_SLOT_SIZE;
  {
    RemoteSyscalls rs(leader, ret_site_ ? *ret_site_ : find_syscall_site(pid));
    if (g.protected_by_frame() && ret_site_) rs.set_syscall_sp(g.frame());
    long addr = rs.checked("mmap of the parasite", SYS_mmap, 0, size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, static_cast<uint64_t>(-1), 0);
    blob_ = prepare_blob(elf, remote_addr(static_cast<uint64_t>(addr)));
    mapped_ = size;
    slots_ = blob_->base() + static_cast<int64_t>(image_size);
    phase(pid, "parasite-mapped");
    try {
      write_remote(pid, blob_->base(), blob_->image().data(), blob_->image().size());
      for (const auto& s : blob_->segments())
        rs.checked("mprotect of the parasite", SYS_mprotect, (blob_->base() + s.offset).as_int(),
                   s.size, static_cast<uint64_t>(s.prot));
    } catch (...) {
      rs.syscall(SYS_munmap, blob_->base().as_int(), size);
      blob_.reset();
      throw;
    }
  }
  vlog("pid {}: parasite at {:#x} ({} bytes){}", pid, blob_->base().as_int(), size,
       g.protected_by_frame() && ret_site_ ? "" : ", unprotected injection");
}

Parasite::~Parasite() {
  unmap();
  phase(proc_.pid, "parasite-released");
  // Guards go in reverse order, leader last, each restoring its thread.
  while (!guards_.empty()) guards_.pop_back();
  phase(proc_.pid, "parasite-done");
}

void Parasite::unmap() noexcept {
  if (!blob_) return;
  const pid_t pid = proc_.pid;
  phase(pid, "parasite-cure");
  try {
    ThreadGuard& g = *guards_.at(0);
    g.park();
    RemoteSyscalls rs(g.task(), ret_site_ ? *ret_site_ : find_syscall_site(pid));
    if (g.protected_by_frame() && ret_site_) rs.set_syscall_sp(g.frame());
    // The blob's socket, if the leader was stopped before it could close it.
    if (leader_sock_ >= 0) rs.syscall(SYS_close, static_cast<uint64_t>(leader_sock_));
    leader_sock_ = -1;
    rs.checked("munmap of the parasite", SYS_munmap, blob_->base().as_int(), mapped_);
  } catch (const std::exception& e) {
    warn("pid {}: the parasite stays mapped at {:#x}: {}", pid, blob_->base().as_int(), e.what());
  }
  blob_.reset();
}

std::vector<std::pair<pid_t, snap_parasite_thread_state>> Parasite::run_thread_entries() {
  const size_t n = proc_.tasks.size() - 1;
  std::vector<std::pair<pid_t, snap_parasite_thread_state>> out;
  if (n == 0) return out;
  const remote_addr entry = blob_->symbol(SNAP_PARASITE_SYM_THREAD_ENTRY);
  std::vector<std::unique_ptr<ThreadGuard>> guards;
  // The slots as they go to the job: all written, and later read, at once.
  std::vector<uint8_t> area(n * SNAP_PARASITE_THREAD_SLOT_SIZE);
  auto slot_in = [&](size_t i) {
    return reinterpret_cast<snap_parasite_thread_slot*>(area.data() + i * SNAP_PARASITE_THREAD_SLOT_SIZE);
  };
  for (size_t i = 0; i < n; i++) {
    Task& t = *proc_.tasks[i + 1];
    guards.push_back(std::make_unique<ThreadGuard>(t, gadget_));
    guards.back()->park();
    if (!guards.back()->protected_by_frame())
      throw Error(fmt::format("thread {} of pid {}: no sigreturn frame for the parasite", t.tid(),
                              proc_.pid),
                  "its stack has no room below the stack pointer");
    slot_in(i)->args.magic = SNAP_PARASITE_MAGIC;
    slot_in(i)->args.sigreturn_sp = guards.back()->sigreturn_sp().as_int();
  }
  auto slot = [&](size_t i) { return slots_ + static_cast<int64_t>(i * SNAP_PARASITE_THREAD_SLOT_SIZE); };
  write_remote(proc_.pid, slots_, area.data(), area.size());
  // All of them set off, then each driven from stop to stop in turn: while
  // snap waits for one, the others run.
  std::vector<bool> running(n, false);
  std::exception_ptr error;
  for (size_t i = 0; i < n && !error; i++) {
    try {
      guards[i]->start(entry, slot(i).as_int(), slot(i + 1));
      running[i] = true;
    } catch (...) {
      error = std::current_exception();
    }
  }
  for (size_t left = std::count(running.begin(), running.end(), true); left;) {
    for (size_t i = 0; i < n; i++) {
      if (!running[i]) continue;
      try {
        if (!guards[i]->wait_and_step()) continue;
      } catch (...) {  // this one is put back; the others still run to their end
        if (!error) error = std::current_exception();
      }
      running[i] = false;
      left--;
    }
  }
  if (error) std::rethrow_exception(error);
  read_remote(proc_.pid, slots_, area.data(), area.size());
  for (size_t i = 0; i < n; i++) {
    const snap_parasite_thread_state& got = slot_in(i)->result;
    const Task& t = *proc_.tasks[i + 1];
    // gettid() there is the thread's id in its own pid namespace (pid_view.h).
    if (got.tid != t.tid() && got.tid != pidview::own_tid(proc_.pid, t.tid()))
      throw Error(fmt::format("parasite thread entry ran in tid {}, expected {}", got.tid, t.tid()));
    out.emplace_back(t.tid(), got);
  }
  return out;
}

void Parasite::run_service(const std::function<void(ParasiteClient&)>& session) {
  const pid_t pid = proc_.pid;
  ThreadGuard& g = *guards_.at(0);
  if (!g.protected_by_frame())
    throw Error(fmt::format("pid {}: no sigreturn frame for the parasite", pid),
                "its stack has no room below the stack pointer, or it has no rt_sigreturn code");

  // snap listens on an abstract unix socket; the blob connects to it.
  ScopedFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener) throw SysError("socket(AF_UNIX) for the parasite", errno);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::random_device rd;
  auto name = fmt::format("snap-parasite-{}-{}-{:08x}", ::getpid(), pid, rd());
  std::memcpy(sun.sun_path + 1, name.data(), name.size());
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&sun), len) < 0)
    throw SysError("bind of the parasite socket", errno);
  if (::listen(listener.get(), 1) < 0) throw SysError("listen on the parasite socket", errno);

  snap_parasite_args args{};
  args.magic = SNAP_PARASITE_MAGIC;
  args.version = SNAP_PARASITE_VERSION;
  args.sock_fd = -1;
  args.addr_len = static_cast<uint16_t>(len);
  static_assert(sizeof(args.addr) >= sizeof(sockaddr_un));
  std::memcpy(args.addr, &sun, len);
  args.sigreturn_sp = g.sigreturn_sp().as_int();
  write_remote(pid, blob_->symbol(SNAP_PARASITE_SYM_ARGS), &args, sizeof args);

  // This thread drives the target with ptrace (only the tracer thread may);
  // the helper talks to the blob. The leader is stepped from stop to stop
  // only until the blob has connected: before that, its failures end in
  // its rt_sigreturn, caught at that call. Once connected, the blob ends
  // only when snap hangs up (after FINI too, it waits for that), so the
  // leader runs free, without a stop at each of its ~100 system calls; when
  // the talk is over it is interrupted wherever it is, parked, and only then
  // does snap hang up.
  std::mutex mu;
  std::condition_variable talk_over;
  bool done = false;
  std::atomic<bool> connected{false};
  int conn_fd = -1;                      // under mu: to cut the talk short on errors
  std::optional<ParasiteClient> client;  // open until the leader is stopped
  std::exception_ptr session_error;
  std::thread talker([&] {
    try {
      pollfd p{listener.get(), POLLIN, 0};
      int r;
      do r = ::poll(&p, 1, 10000);
      while (r < 0 && errno == EINTR);
      if (r <= 0) throw Error(fmt::format("the parasite in pid {} did not connect", pid));
      ScopedFd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn) throw SysError("accept of the parasite connection", errno);
      {
        std::lock_guard lock(mu);
        conn_fd = conn.get();
        client.emplace(std::move(conn));
      }
      connected = true;
      session(*client);
      client->fini();
    } catch (...) {
      session_error = std::current_exception();
    }
    std::lock_guard lock(mu);
    done = true;
    talk_over.notify_all();
  });
  phase(pid, "parasite-service");
  std::exception_ptr run_error;
  try {
    const pid_t tid = g.task().tid();
    auto next_stop = [&](int flags) -> std::optional<int> {
      int st = 0;
      pid_t w;
      do w = ::waitpid(tid, &st, __WALL | flags);
      while (w < 0 && errno == EINTR);
      if (w < 0) throw SysError(fmt::format("waitpid(pid {}) running the parasite", tid), errno);
      return w == 0 ? std::nullopt : std::optional<int>(st);
    };
    g.start(blob_->symbol(SNAP_PARASITE_SYM_TRAP_ENTRY));
    bool ended = false;  // its rt_sigreturn done: it never connected
    while (!ended && !connected) ended = g.wait_and_step();
    if (ended) {
      ::shutdown(listener.get(), SHUT_RDWR);  // the talker need not wait any longer
    } else {
      std::unique_lock lock(mu);
      while (!done) {
        lock.unlock();
        while (auto st = next_stop(WNOHANG)) g.on_free_stop(*st);
        lock.lock();
        talk_over.wait_for(lock, std::chrono::milliseconds(1), [&] { return done; });
      }
      lock.unlock();
      g.interrupt();
      while (!g.on_free_stop(*next_stop(0))) {}
      const uint64_t ip = g.task().regs().ip().as_int(), base = blob_->base().as_int();
      if (ip < base || ip >= base + mapped_) {
        // Its rt_sigreturn ran (a socket error the blob took for snap's
        // end): back in its own code, which has run since. Its state now is
        // the one to keep; what was collected is stale.
        g.forget();
        guards_[0] = std::make_unique<ThreadGuard>(*proc_.tasks.at(0), gadget_);
        throw Error(fmt::format("the parasite in pid {} went back to the program before snap "
                                "stopped it; nothing was written",
                                pid),
                    "the job runs on; run the dump again");
      }
      g.park();
      snap_parasite_args back{};
      read_remote(pid, blob_->symbol(SNAP_PARASITE_SYM_ARGS), &back, sizeof back);
      leader_sock_ = back.sock_fd;
    }
  } catch (...) {
    run_error = std::current_exception();
    ::shutdown(listener.get(), SHUT_RDWR);
    std::lock_guard lock(mu);
    if (conn_fd >= 0) ::shutdown(conn_fd, SHUT_RDWR);
  }
  talker.join();
  client.reset();  // hang up: the leader is stopped (or gone back by itself)
  if (run_error) std::rethrow_exception(run_error);
  if (session_error) std::rethrow_exception(session_error);
}

// ---- the dump step ----------------------------------------------------------------

std::vector<image::PosixTimer> read_posix_timers(pid_t pid) {
  std::vector<image::PosixTimer> out;
  auto text = proc::try_read_file("/proc/" + std::to_string(pid) + "/timers");
  if (!text) return out;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon), val = line.substr(colon + 1);
    val.erase(0, val.find_first_not_of(' '));
    try {
      if (key == "ID") {
        out.emplace_back();
        out.back().id = std::stoi(val);
      } else if (out.empty()) {
        continue;
      } else if (key == "signal") {
        auto slash = val.find('/');
        out.back().signo = std::stoi(val.substr(0, slash));
        if (slash != std::string::npos) out.back().sigev_value = std::stoull(val.substr(slash + 1), nullptr, 16);
      } else if (key == "notify") {
        out.back().notify = val;
      } else if (key == "ClockID") {
        out.back().clock_id = std::stoi(val);
      }
    } catch (const std::exception&) {
      throw Error(fmt::format("/proc/{}/timers: cannot parse \"{}\"", pid, line));
    }
  }
  return out;
}

ParasiteState run_parasite(SeizedTree::Proc& proc, const std::vector<image::FileDesc>& fds,
                           const std::vector<image::Mapping>* mappings) {
  ParasiteState st;
  st.posix_timers = read_posix_timers(proc.pid);
  Parasite para(proc, mappings);
  st.threads = para.run_thread_entries();
  para.run_service([&](ParasiteClient& c) {
    st.sigactions = c.get_sigactions();
    st.threads.emplace_back(proc.pid, c.get_thread_state());
    std::vector<int32_t> ids;
    for (const auto& t : st.posix_timers) ids.push_back(t.id);
    Itimers it = c.get_itimers(ids);
    for (size_t w = 0; w < 3; w++) {
      if (it.itimers.itimer_status[w] < 0)
        throw SysError(fmt::format("parasite: getitimer({}) in pid {}", w, proc.pid),
                       -it.itimers.itimer_status[w]);
      const auto& v = it.itimers.itimer[w];
      st.itimers[w] = {v.interval_sec * 1000000000 + v.interval_usec * 1000,
                       v.value_sec * 1000000000 + v.value_usec * 1000};
    }
    for (size_t i = 0; i < it.posix.size(); i++) {
      const auto& p = it.posix[i];
      if (p.status < 0)
        throw SysError(fmt::format("parasite: timer_gettime({}) in pid {}", p.id, proc.pid), -p.status);
      st.posix_timers[i].value = {p.interval_sec * 1000000000 + p.interval_nsec,
                                  p.value_sec * 1000000000 + p.value_nsec};
      st.posix_timers[i].overrun = p.overrun;
    }
    st.misc = c.get_misc();
    std::set<uint64_t> seen;
    // A FIFO's unread data too (through any fd that may read it: tee
    // needs one), once per FIFO.
    for (const auto& f : fds) {
      bool pipe_read = f.type == image::FdType::Pipe && (f.flags & O_ACCMODE) == O_RDONLY;
      bool fifo_read = f.type == image::FdType::Fifo && (f.flags & O_ACCMODE) != O_WRONLY &&
                       !(f.flags & O_PATH);
      if ((pipe_read || fifo_read) && seen.insert(f.inode).second)
        st.pipes.emplace_back(f.fd, c.peek_pipe(f.fd));
    }
  });
  return st;  // ~Parasite: munmap, every thread back as it was
}

void apply_parasite_state(const ParasiteState& s, image::Process& out) {
  out.sigactions = s.sigactions;
  for (const auto& [tid, ts] : s.threads)
    for (auto& t : out.threads)
      if (t.tid == tid) apply_thread_state(ts, t);
  out.itimers = s.itimers;
  out.posix_timers = s.posix_timers;
  if (s.misc.pdeathsig_status == 0) out.pdeathsig = s.misc.pdeathsig;
  if (s.misc.dumpable >= 0) out.dumpable = s.misc.dumpable;
  if (s.misc.child_subreaper_status == 0) out.child_subreaper = s.misc.child_subreaper;
  out.umask = s.misc.umask;
  out.membarrier = s.misc.membarrier;
  for (const auto& [fd, data] : s.pipes) {
    auto rd = std::find_if(out.fds.begin(), out.fds.end(), [&](const auto& f) { return f.fd == fd; });
    if (rd == out.fds.end()) continue;
    rd->pipe_data = data;
    // fds are sorted: the first write end of the same pipe is the lowest.
    for (auto& f : out.fds)
      if (f.type == image::FdType::Pipe && f.inode == rd->inode && (f.flags & O_ACCMODE) != O_RDONLY) {
        f.pipe_data = data;
        break;
      }
  }
}

}  // namespace snap::parasite
