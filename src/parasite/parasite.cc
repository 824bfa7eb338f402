#include "parasite/parasite.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
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
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"
#include "parasite/embedded_blob.h"
#include "tracer/mempolicy.h"
#include "tracer/pid_view.h"
#include "tracer/proc.h"
#include "tracer/remote.h"

namespace snap::parasite {

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
  // And, for the fault test, a pause there: snap killed in it is snap
  // killed in that state, however short it is otherwise.
  static const char* pause_at = std::getenv("SNAP_PHASE_PAUSE");
  if (pause_at && std::strcmp(pause_at, what) == 0) {
    struct timespec pause = {0, 300 * 1000 * 1000};
    ::nanosleep(&pause, nullptr);
  }
}

// ---- Parasite -----------------------------------------------------------------


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
      // The mapping is fresh and zero: its zero tail (.bss) is not
      // written, and segments that want what it has (read and write) keep
      // it without a call.
      write_remote(pid, blob_->base(), blob_->image().data(), blob_->written_size());
      for (const auto& s : blob_->segments())
        if (s.prot != (PROT_READ | PROT_WRITE))
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

namespace {

// The slots' heads (args, result, done), read from the job or written to
// it, a call for up to 512 of them.
void move_slot_heads(pid_t pid, remote_addr slots, std::vector<snap_parasite_thread_slot>& heads,
                     bool write) {
  const size_t n = heads.size();
  auto slot = [&](size_t i) { return slots + static_cast<int64_t>(i * SNAP_PARASITE_THREAD_SLOT_SIZE); };
  constexpr size_t kBatch = 512;  // iovecs a call, under IOV_MAX
  for (size_t i = 0; i < n; i += kBatch) {
    const size_t k = std::min(kBatch, n - i);
    std::vector<iovec> local(k), remote(k);
    for (size_t j = 0; j < k; j++) {
      local[j] = {&heads[i + j], sizeof heads[i + j]};
      remote[j] = {reinterpret_cast<void*>(slot(i + j).as_int()), sizeof heads[i + j]};
    }
    ssize_t done = write ? ::process_vm_writev(pid, local.data(), k, remote.data(), k, 0)
                         : ::process_vm_readv(pid, local.data(), k, remote.data(), k, 0);
    if (done == static_cast<ssize_t>(k * sizeof heads[0])) continue;
    for (size_t j = 0; j < k; j++)  // one by one (these fall back to /proc/PID/mem)
      if (write)
        write_remote(pid, slot(i + j), &heads[i + j], sizeof heads[i + j]);
      else
        read_remote(pid, slot(i + j), &heads[i + j], sizeof heads[i + j]);
  }
}

}  // namespace

Parasite::ThreadStates Parasite::run_thread_entries(int wait_fd, const std::function<bool()>& between) {
  const size_t n = proc_.tasks.size() - 1;
  ThreadStates out;
  if (n == 0) return out;
  const remote_addr entry = blob_->symbol(SNAP_PARASITE_SYM_THREAD_ENTRY);
  std::vector<std::unique_ptr<ThreadGuard>> guards;
  std::vector<snap_parasite_thread_slot> heads(n);
  auto slot = [&](size_t i) { return slots_ + static_cast<int64_t>(i * SNAP_PARASITE_THREAD_SLOT_SIZE); };
  for (size_t i = 0; i < n; i++) {
    guards.push_back(
        std::make_unique<ThreadGuard>(*proc_.tasks[i + 1], gadget_, ThreadGuard::DeferFrame{}));
  }
  ThreadGuard::write_frames(proc_.pid, guards);  // one system call for all
  for (size_t i = 0; i < n; i++) {
    const Task& t = *proc_.tasks[i + 1];
    if (!guards[i]->protected_by_frame())
      throw Error(fmt::format("thread {} of pid {}: no sigreturn frame for the parasite", t.tid(),
                              proc_.pid),
                  "its stack has no room below the stack pointer");
    heads[i] = {};
    heads[i].args.magic = SNAP_PARASITE_MAGIC;
    heads[i].args.wait_fd = wait_fd;
    heads[i].args.sigreturn_sp = guards[i]->sigreturn_sp().as_int();
  }
  // The slots first: a thread is pointed at the entry only once its slot
  // leads it back (should snap die then, the entry finds snap's end of the
  // socket closed and returns by its rt_sigreturn; an empty slot would
  // end in the entry's int3, and the job with it).
  move_slot_heads(proc_.pid, slots_, heads, true);
  for (size_t i = 0; i < n; i++) guards[i]->prepare(entry, slot(i).as_int(), slot(i + 1));
  phase(proc_.pid, "parasite-threads-ready");
  // All set off at once, running free (no stop at each system call): each
  // reports, then waits on the socket until snap stops it there.
  std::vector<bool> running(n, false);
  std::exception_ptr error;
  for (size_t i = 0; i < n && !error; i++) {
    try {
      guards[i]->resume_free();
      running[i] = true;
    } catch (...) {
      error = std::current_exception();
    }
  }
  const auto started = std::chrono::steady_clock::now();
  const auto deadline = started + std::chrono::seconds(10);
  auto next_look = started + std::chrono::milliseconds(5);
  while (!error) {
    move_slot_heads(proc_.pid, slots_, heads, false);
    bool all = true;
    for (size_t i = 0; i < n && all; i++) all = !running[i] || heads[i].done;
    if (all) break;
    // A thread not done yet may have stopped on its way (a SIGSTOP it took
    // for the job, held back then; a fault, which throws): looked at once
    // the entries take longer than they do (5 ms), then every 5 ms, and
    // let go on. (A waitpid walks all of snap's tracees: one a thread each
    // time round would cost the freeze of a job with many threads.)
    if (std::chrono::steady_clock::now() >= next_look) {
      next_look = std::chrono::steady_clock::now() + std::chrono::milliseconds(5);
      for (size_t i = 0; i < n && !error; i++) {
        if (!running[i] || heads[i].done) continue;
        int status = 0;
        const pid_t w = ::waitpid(proc_.tasks[i + 1]->tid(), &status, __WALL | WNOHANG);
        if (w <= 0) continue;
        try {
          guards[i]->on_free_stop(status);
        } catch (...) {
          error = std::current_exception();
          running[i] = false;  // put back by hand (a fault) or gone
        }
      }
    }
    if (error) break;
    if (std::chrono::steady_clock::now() > deadline) {
      size_t late = 0;
      for (size_t i = 0; i < n; i++) late += running[i] && !heads[i].done;
      error = std::make_exception_ptr(Error(fmt::format(
          "pid {}: {} thread(s) did not run the parasite's thread entry within 10 s", proc_.pid, late)));
      break;
    }
    if (!between()) {
      error = std::make_exception_ptr(Error(fmt::format("the parasite in pid {} failed", proc_.pid)));
      break;
    }
    struct timespec pause = {0, 50 * 1000};
    ::nanosleep(&pause, nullptr);
  }
  // Every one started: stopped where it waits, checked, put back. A fault
  // (or the int3 of a slot the blob refused) shows at this stop and throws.
  for (size_t i = 0; i < n; i++) {
    if (!running[i]) continue;
    try {
      guards[i]->interrupt();
    } catch (...) {
      if (!error) error = std::current_exception();
      running[i] = false;  // gone: nothing to wait for
      guards[i]->forget();
    }
  }
  for (size_t i = 0; i < n; i++) {
    if (!running[i]) continue;
    try {
      while (!guards[i]->wait_free()) {}
    } catch (...) {
      if (!error) error = std::current_exception();
      running[i] = false;
    }
  }
  // Where each one stopped: still in the blob, or on its way back (its
  // rt_sigreturn, after the socket failed it), told by its slot.
  move_slot_heads(proc_.pid, slots_, heads, false);
  for (size_t i = 0; i < n; i++) {
    if (!running[i]) continue;
    ThreadGuard& g = *guards[i];
    try {
      if (heads[i].left) {
        // Its own code may have run since: what it reported is stale, and
        // its state is its own (a thread still short of its rt_sigreturn
        // finishes the way back once let go).
        g.forget();
        throw Error(fmt::format("thread {} of pid {} went back to the program before snap stopped "
                                "it; nothing was written", g.task().tid(), proc_.pid),
                    "the job runs on; run the dump again");
      }
      g.release();
    } catch (...) {
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  ThreadGuard::put_back_under_frames(proc_.pid, guards);  // one call for all
  for (size_t i = 0; i < n; i++) {
    const snap_parasite_thread_state& got = heads[i].result;
    const Task& t = *proc_.tasks[i + 1];
    // gettid() there is the thread's id in its own pid namespace (pid_view.h).
    if (got.tid != t.tid() && got.tid != pidview::own_tid(proc_.pid, t.tid()))
      throw Error(fmt::format("parasite thread entry ran in tid {}, expected {}", got.tid, t.tid()));
    out.emplace_back(t.tid(), got);
  }
  return out;
}

int Parasite::service_socket(const std::function<bool()>& between) {
  // The blob notes it in its args right after connect().
  const remote_addr args = blob_->symbol(SNAP_PARASITE_SYM_ARGS);
  snap_parasite_args now{};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    read_remote(proc_.pid, args, &now, sizeof now);
    if (now.sock_fd >= 0) return now.sock_fd;
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(fmt::format("the parasite in pid {} connected but did not note its socket",
                              proc_.pid));
    if (!between()) throw Error(fmt::format("the parasite in pid {} failed", proc_.pid));
    struct timespec pause = {0, 20 * 1000};
    ::nanosleep(&pause, nullptr);
  }
}

Parasite::ThreadStates Parasite::run_service(const std::function<void(ParasiteClient&)>& session) {
  const pid_t pid = proc_.pid;
  ThreadStates threads;
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
  std::exception_ptr run_error, threads_error;
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
      // Still stepped: its next system call (the read of the first
      // command) stops it. Set it free there at once, not at the loop's
      // next look below (a millisecond later, and the first command waits).
      g.wait_free();
      auto drain = [&] {  // the leader runs free: on past any stop but a fault
        while (auto st = next_stop(WNOHANG)) g.on_free_stop(*st);
      };
      // The other threads meanwhile. Whatever fails there, each is back as
      // it was, and the leader's talk still ends the usual way (stopped in
      // the blob, parked) before the error is reported; a fault of the
      // leader meanwhile ends it all at once, as below.
      std::exception_ptr leader_error;
      auto drain_meanwhile = [&] {
        try {
          drain();
          return true;
        } catch (...) {
          leader_error = std::current_exception();
          return false;
        }
      };
      if (proc_.tasks.size() > 1) try {
        threads = run_thread_entries(service_socket(drain_meanwhile), drain_meanwhile);
      } catch (...) {
        threads_error = std::current_exception();
      }
      if (leader_error) std::rethrow_exception(leader_error);
      std::unique_lock lock(mu);
      while (!done) {
        lock.unlock();
        while (auto st = next_stop(WNOHANG)) g.on_free_stop(*st);
        lock.lock();
        talk_over.wait_for(lock, std::chrono::milliseconds(1), [&] { return done; });
      }
      lock.unlock();
      g.interrupt();
      while (!g.wait_free()) {}
      if (!in_blob(g.task().regs().ip())) {
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
  if (threads_error) std::rethrow_exception(threads_error);
  if (session_error) std::rethrow_exception(session_error);
  return threads;
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
  std::optional<snap_parasite_thread_state> leader;
  st.threads = para.run_service([&](ParasiteClient& c) {
    st.sigactions = c.get_sigactions();
    leader = c.get_thread_state();
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
  if (leader) st.threads.emplace_back(proc.pid, *leader);
  return st;  // ~Parasite: munmap, every thread back as it was
}

void apply_parasite_state(const ParasiteState& s, image::Process& out) {
  out.sigactions = s.sigactions;
  // A thread's memory policy is kept where it is not the process's (read
  // from numa_maps by collect_process).
  const MemPolicy process =
      out.mempolicy.empty() ? MemPolicy{} : parse_mempolicy(out.mempolicy).value_or(MemPolicy{});
  for (const auto& [tid, ts] : s.threads)
    for (auto& t : out.threads)
      if (t.tid == tid) {
        apply_thread_state(ts, t);
        if (ts.mempolicy_status != 0) continue;
        const MemPolicy own =
            mempolicy_of(ts.mempolicy_mode, ts.mempolicy_nodes, SNAP_PARASITE_MEMPOLICY_WORDS);
        if (!(own == process)) t.mempolicy = mempolicy_text(own);
      }
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
