#include "tracer/probe.h"

#include "tracer/pagemap.h"
#include "tracer/proc.h"

#include <elf.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <thread>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"
#include "tracer/probe_child.h"
#include "tracer/userfaultfd.h"
#include "tracer/write_tracker.h"

namespace snap::probe {
namespace {

std::string errno_name(int err) { return std::strerror(err); }

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return {};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One pagemap entry of `pid` for the page at `addr`.
std::optional<uint64_t> pagemap_entry(const std::string& pid, uint64_t addr, int* err) {
  ScopedFd fd(::open(("/proc/" + pid + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    *err = errno;
    return std::nullopt;
  }
  uint64_t e = 0;
  off_t off = static_cast<off_t>(addr / page_size() * sizeof e);
  if (::pread(fd.get(), &e, sizeof e, off) != static_cast<ssize_t>(sizeof e)) {
    *err = errno;
    return std::nullopt;
  }
  return e;
}

constexpr uint64_t kPmPresent = 1ULL << 63;
constexpr uint64_t kPmSoftDirty = 1ULL << 55;
constexpr uint64_t kPmPfnMask = (1ULL << 55) - 1;

// clone3 with one set_tid entry: the new process gets `tid` in the caller's
// pid namespace. The new process exits at once. Returns its pid or -errno.
long clone3_with_tid(pid_t tid) {
  pid_t tids[1] = {tid};
  clone_args args{};
  args.exit_signal = SIGCHLD;
  args.set_tid = reinterpret_cast<uint64_t>(tids);
  args.set_tid_size = 1;
  long r = ::syscall(SYS_clone3, &args, sizeof args);
  if (r == 0) ::syscall(SYS_exit_group, 0);  // the new process: touch nothing, leave
  return r < 0 ? -errno : r;
}

// clone3 set_tid on pids that look free, retrying when one was taken in the
// meantime. Returns the created pid (already reaped) or -errno.
long try_set_tid(pid_t first_candidate, int tries) {
  long last = -ESRCH;
  for (int i = 0; i < tries; ++i) {
    pid_t cand = first_candidate + i * 7;
    if (::kill(cand, 0) == 0 || errno != ESRCH) continue;  // in use
    long r = clone3_with_tid(cand);
    if (r > 0) {
      Child c(static_cast<pid_t>(r));
      c.wait_exit(Clock::now() + kProbeTimeout);
      return r == cand ? r : -EINVAL;
    }
    last = r;
    if (r != -EEXIST) return r;
  }
  return last;
}

// Why this kernel refuses unprivileged user namespaces, from the sysctls
// that do: "" when none of them says no.
std::string userns_blocker() {
  auto value = [](const char* path) -> std::string {
    try {
      return trim(read_file(path));
    } catch (...) {
      return {};
    }
  };
  std::string out;
  if (value("/proc/sys/kernel/unprivileged_userns_clone") == "0")
    out += "; kernel.unprivileged_userns_clone=0 forbids user namespaces to ordinary users";
  if (value("/proc/sys/user/max_user_namespaces") == "0")
    out += "; user.max_user_namespaces=0 forbids user namespaces";
  if (value("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1")
    out += "; kernel.apparmor_restrict_unprivileged_userns=1 (AppArmor) restricts them";
  return out;
}

int yama_scope() {
  std::string s = trim(read_file("/proc/sys/kernel/yama/ptrace_scope"));
  if (s.empty()) return -1;
  try {
    return std::stoi(s);
  } catch (...) {
    return -1;
  }
}

bool has_effective_cap(int cap) {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capget, &hdr, data) != 0) return false;
  return (data[cap / 32].effective >> (cap % 32)) & 1U;
}

#ifndef CAP_CHECKPOINT_RESTORE
#define CAP_CHECKPOINT_RESTORE 40
#endif

#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

}  // namespace

// ---------------------------------------------------------------------------

Result probe_ptrace() {
  Result r{"ptrace", "ptrace attach", Need::kRequired, false, {}};
  int scope = yama_scope();
  std::string yama;
  if (scope == 1)
    yama = has_effective_cap(CAP_SYS_PTRACE)
               ? "; Yama ptrace_scope=1, but CAP_SYS_PTRACE lets snap attach to any process"
               : "; Yama ptrace_scope=1: snap can attach only to its own descendants, "
                 "start jobs under `snap run`";
  else if (scope == 2)
    yama = "; Yama ptrace_scope=2: only processes with CAP_SYS_PTRACE may attach";
  else if (scope == 3)
    yama = "; Yama ptrace_scope=3: ptrace attach is disabled until reboot";
  else if (scope == 0)
    yama = "; Yama ptrace_scope=0: any process of this user can be attached";
  try {
    Target t;
    pid_t pid = t.pid();
    if (::ptrace(PTRACE_SEIZE, pid, nullptr, reinterpret_cast<void*>(PTRACE_O_EXITKILL)) != 0) {
      int err = errno;
      std::string status = read_file("/proc/self/status");
      bool traced = status.find("TracerPid:\t0\n") == std::string::npos &&
                    status.find("TracerPid:") != std::string::npos;
      r.message = fmt::format("PTRACE_SEIZE of own child: {}: snap cannot dump{}{}",
                              errno_name(err),
                              traced ? " (snap runs under a debugger or strace, which may "
                                       "hold its children)"
                                     : "",
                              yama);
      return r;
    }
    if (::ptrace(PTRACE_INTERRUPT, pid, nullptr, nullptr) != 0) {
      r.message = fmt::format("PTRACE_INTERRUPT: {}{}", errno_name(errno), yama);
      return r;
    }
    auto st = wait_until(pid, Clock::now() + kProbeTimeout);
    if (!st || !WIFSTOPPED(*st)) {
      r.message = "the seized child did not stop after PTRACE_INTERRUPT" + yama;
      return r;
    }
    user_regs_struct regs{};
    iovec iov{&regs, sizeof regs};
    if (::ptrace(PTRACE_GETREGSET, pid, reinterpret_cast<void*>(NT_PRSTATUS), &iov) != 0 ||
        iov.iov_len != sizeof regs) {
      r.message = fmt::format("PTRACE_GETREGSET NT_PRSTATUS: {}", errno_name(errno));
      return r;
    }
    std::vector<uint64_t> xsave(8192);  // 64 KiB, far above any XSAVE area
    iovec xiov{xsave.data(), xsave.size() * sizeof(uint64_t)};
    if (::ptrace(PTRACE_GETREGSET, pid, reinterpret_cast<void*>(NT_X86_XSTATE), &xiov) != 0) {
      r.message = fmt::format("PTRACE_GETREGSET NT_X86_XSTATE: {}: extended registers "
                              "(AVX, ...) cannot be saved",
                              errno_name(errno));
      return r;
    }
    if (::ptrace(PTRACE_DETACH, pid, nullptr, nullptr) != 0) {
      r.message = fmt::format("PTRACE_DETACH: {}", errno_name(errno));
      return r;
    }
    if (!t.poke()) {
      r.message = "the child did not run on after PTRACE_DETACH";
      return r;
    }
    vlog("ptrace probe: child {} rip={:#x} xsave={} bytes", pid, regs.rip, xiov.iov_len);
    r.ok = true;
    r.message = fmt::format("seize/interrupt/registers work (XSAVE {} bytes){}", xiov.iov_len, yama);
  } catch (const Error& e) {
    r.message = e.what();
  }
  return r;
}

Result probe_process_vm_readv() {
  Result r{"process_vm_readv", "process_vm_readv", Need::kRequired, false, {}};
  try {
    Target t;
    uint64_t got = 0;
    iovec local{&got, sizeof got};
    iovec remote{reinterpret_cast<void*>(t.touched()), sizeof got};
    ssize_t n = ::process_vm_readv(t.pid(), &local, 1, &remote, 1, 0);
    if (n != static_cast<ssize_t>(sizeof got)) {
      r.message = fmt::format("reading a child's memory: {}: snap cannot copy memory fast",
                              n < 0 ? errno_name(errno) : "short read");
    } else if (got != t.expected_value()) {
      r.message = fmt::format("read {:#x} from the child, expected {:#x}", got, t.expected_value());
    } else {
      r.ok = true;
      r.message = "memory of a traced process can be copied without a parasite";
    }
  } catch (const Error& e) {
    r.message = e.what();
  }
  return r;
}

Result probe_pagemap() {
  Result r{"pagemap", "/proc/PID/pagemap", Need::kRequired, false, {}};
  try {
    Target t;
    std::string pid = std::to_string(t.pid());
    int err = 0;
    auto touched = pagemap_entry(pid, t.touched(), &err);
    auto untouched = touched ? pagemap_entry(pid, t.untouched(), &err) : std::nullopt;
    if (!touched || !untouched) {
      r.message = fmt::format("reading /proc/{}/pagemap: {}: snap cannot tell which pages exist",
                              pid, errno_name(err));
    } else if (!(*touched & kPmPresent)) {
      r.message = fmt::format("a written page is not reported present (entry {:#x})", *touched);
    } else if (*untouched & kPmPresent) {
      r.message = fmt::format("an untouched page is reported present (entry {:#x})", *untouched);
    } else {
      r.ok = true;
      r.message = (*touched & kPmPfnMask)
                      ? "present bits and PFNs readable"
                      : "present bits readable; PFNs hidden without CAP_SYS_ADMIN "
                        "(pages shared between processes cannot be matched by frame)";
    }
  } catch (const Error& e) {
    r.message = e.what();
  }
  return r;
}

Result probe_set_tid() {
  Result r{"set_tid", "clone3 set_tid", Need::kPidChoice, false, {}};
  try {
    long pid_max = 32768;
    try {
      pid_max = std::stol(read_file("/proc/sys/kernel/pid_max"));
    } catch (...) {
    }
    // Pids near the top of the range are rarely in use.
    pid_t first = static_cast<pid_t>(pid_max - 1000 + ::getpid() % 500);
    long got = try_set_tid(first, 20);
    if (got > 0) {
      r.ok = true;
      r.message = fmt::format("restored processes get their old pids here (made pid {})", got);
    } else if (got == -EPERM) {
      r.message = "needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN: restore must run in a new "
                  "user+pid namespace";
    } else if (got == -ENOSYS) {
      r.message = "clone3 not supported by this kernel (needs Linux 5.5)";
    } else {
      r.message = fmt::format("clone3 set_tid: {}", errno_name(static_cast<int>(-got)));
    }
  } catch (const Error& e) {
    r.message = e.what();
  }
  return r;
}

Result probe_prctl_mm_map() {
  Result r{"prctl_mm_map", "prctl PR_SET_MM_MAP", Need::kRequired, false, {}};
  try {
    auto out = run_in_child([](int fd) {
      unsigned size = 0;
      if (::prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE, &size, 0, 0) != 0) {
        say(fd, fmt::format("PR_SET_MM_MAP_SIZE: {}", errno_name(errno)));
        return 1;
      }
      if (size != sizeof(prctl_mm_map)) {
        say(fd, fmt::format("kernel's prctl_mm_map is {} bytes, snap's {}", size,
                            sizeof(prctl_mm_map)));
        return 1;
      }
      // The current layout, re-set unchanged.
      proc::Stat st;
      try {
        st = proc::read_stat(::getpid());
      } catch (const Error& e) {
        say(fd, e.what());
        return 1;
      }
      std::string auxv = read_file("/proc/self/auxv");
      prctl_mm_map m{};
      m.start_code = st.start_code;
      m.end_code = st.end_code;
      m.start_stack = st.start_stack;
      m.start_data = st.start_data;
      m.end_data = st.end_data;
      m.start_brk = st.start_brk;
      m.brk = static_cast<uint64_t>(::syscall(SYS_brk, 0));
      m.arg_start = st.arg_start;
      m.arg_end = st.arg_end;
      m.env_start = st.env_start;
      m.env_end = st.env_end;
      m.auxv = reinterpret_cast<__u64*>(auxv.data());
      m.auxv_size = static_cast<uint32_t>(auxv.size());
      m.exe_fd = static_cast<uint32_t>(-1);
      if (::prctl(PR_SET_MM, PR_SET_MM_MAP, &m, sizeof m, 0) != 0) {
        say(fd, fmt::format("PR_SET_MM_MAP of the unchanged layout: {}", errno_name(errno)));
        return 1;
      }
      return 0;
    });
    if (out.exited_ok()) {
      r.ok = true;
      r.message = "restored processes get their brk, argv/env and auxv back";
    } else {
      r.message = (out.said.empty() ? "probe child " + out.how() : out.said) +
                  ": restored processes would keep wrong brk/argv/auxv";
    }
  } catch (const Error& e) {
    r.message = e.what();
  }
  return r;
}

Result probe_userns_pidns() {
  Result r{"userns_pidns", "user+pid namespaces", Need::kPidChoice, false, {}};
  try {
    uid_t uid = ::getuid();
    gid_t gid = ::getgid();
    auto out = run_in_child([uid, gid](int fd) {
      if (::unshare(CLONE_NEWUSER | CLONE_NEWPID) != 0) {
        int err = errno;
        say(fd, fmt::format("unshare(CLONE_NEWUSER|CLONE_NEWPID): {}{}", errno_name(err),
                            userns_blocker()));
        return 1;
      }
      // Map the user's own uid and gid, as a restore does: the restored job
      // keeps its ids.
      auto write_file = [](const std::string& path, const std::string& text) -> std::string {
        ScopedFd f(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
        if (!f || ::write(f.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
          return fmt::format("writing \"{}\" to {}: {}", text, path, errno_name(errno));
        return {};
      };
      for (auto [path, text] : {std::pair<std::string, std::string>{"/proc/self/setgroups", "deny"},
                                {"/proc/self/uid_map", fmt::format("{} {} 1", uid, uid)},
                                {"/proc/self/gid_map", fmt::format("{} {} 1", gid, gid)}})
        if (auto err = write_file(path, text); !err.empty()) {
          say(fd, err);
          return 1;
        }
      pid_t init = ::fork();
      if (init < 0) {
        say(fd, fmt::format("fork in the new pid namespace: {}", errno_name(errno)));
        return 1;
      }
      if (init == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        ::alarm(kChildAlarmSeconds);
        if (::getpid() != 1) {
          say(fd, fmt::format("first process in the new pid namespace is pid {}, not 1",
                              ::getpid()));
          ::_exit(1);
        }
        long got = clone3_with_tid(100);
        if (got < 0) {
          say(fd, fmt::format("clone3 set_tid inside the namespace: {}",
                              errno_name(static_cast<int>(-got))));
          ::_exit(1);
        }
        int st = 0;
        ::waitpid(static_cast<pid_t>(got), &st, 0);
        if (got != 100) {
          say(fd, fmt::format("clone3 set_tid 100 made pid {}", got));
          ::_exit(1);
        }
        ::_exit(0);
      }
      int st = 0;
      if (::waitpid(init, &st, 0) != init) return 1;
      return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
    });
    if (out.exited_ok()) {
      r.ok = true;
      r.message = "unprivileged restore can give processes their pids in a new namespace";
      if (!out.said.empty()) r.message += " " + out.said;
    } else {
      r.message = (out.said.empty() ? "probe child " + out.how() : out.said) +
                  ": restore cannot use a private pid namespace";
    }
  } catch (const Error& e) {
    r.message = e.what();
  }
  return r;
}

Result probe_userfaultfd() {
  Result r{"userfaultfd", "userfaultfd", Need::kOptional, false, {}};
  std::string how = "userfaultfd(2)";
  ScopedFd fd(static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
  bool user_only = false;
  int err = errno;
  if (!fd && err == EPERM) {
    // vm.unprivileged_userfaultfd=0: only faults from user mode are allowed.
    fd.reset(static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY)));
    if (fd) user_only = true;
  }
  if (!fd) {
    ScopedFd dev(::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
    if (dev) fd.reset(::ioctl(dev.get(), USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK));
    if (!fd) {
      r.message = fmt::format("userfaultfd(2): {}, /dev/userfaultfd: {}: restore fills memory "
                              "through page faults (process_vm_writev), and incremental dumps "
                              "compare page contents",
                              errno_name(err), errno_name(errno));
      return r;
    }
    how = "/dev/userfaultfd";
  }
  uffdio_api api{};
  api.api = UFFD_API;
  if (::ioctl(fd.get(), UFFDIO_API, &api) != 0) {
    r.message = fmt::format("UFFDIO_API: {}", errno_name(errno));
    return r;
  }
  // What a restore creates in the process it rebuilds (restore/page_copier.h).
  ScopedFd copier(static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY)));
  int copier_err = errno;
  r.ok = true;
  r.message = fmt::format(
      "available via {}{}; write-protect {}{}; restore fills private memory {}", how,
      user_only ? " (user-mode faults only: vm.unprivileged_userfaultfd=0)" : "",
      (api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP) ? "yes" : "no",
      (api.features & UFFD_FEATURE_WP_ASYNC) ? ", async wp" : "",
      copier ? "with UFFDIO_COPY"
             : fmt::format("through page faults (userfaultfd(UFFD_USER_MODE_ONLY): {})",
                           errno_name(copier_err)));
  return r;
}

Result probe_pagemap_scan() {
  Result r{"pagemap_scan", "PAGEMAP_SCAN ioctl", Need::kOptional, false, {}};
  try {
    size_t ps = page_size();
    Mapping m(4 * ps);
    m.addr()[0] = 1;
    m.addr()[2 * ps] = 1;
    ScopedFd fd(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
    if (!fd) {
      r.message = fmt::format("open /proc/self/pagemap: {}", errno_name(errno));
      return r;
    }
    const uint64_t start = reinterpret_cast<uint64_t>(m.addr());
    std::vector<pagemap::Region> regions;
    int err = pagemap::scan(fd.get(), start, start + 4 * ps, 0, pagemap::kPageIsPresent, 0,
                            pagemap::kPageIsPresent, regions);
    size_t n = regions.size();
    if (err) {
      r.message = fmt::format("PAGEMAP_SCAN: {}: page scans fall back to reading pagemap "
                              "(needs Linux 6.7)",
                              errno_name(err));
    } else if (n != 2 || regions[0].start != start || regions[0].end != start + ps ||
               regions[1].start != start + 2 * ps) {
      r.message = fmt::format("PAGEMAP_SCAN found {} regions, expected the 2 written pages", n);
    } else {
      r.ok = true;
      r.message = "present pages found in one call per range";
    }
  } catch (const Error& e) {
    r.message = e.what();
  }
  return r;
}

Result probe_proc_children() {
  Result r{"proc_children", "/proc/PID/task/TID/children", Need::kOptional, false, {}};
  try {
    Target t;
    std::string path = fmt::format("/proc/self/task/{}/children", ::gettid());
    ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
      r.message = fmt::format("{}: {}: process trees are found by scanning /proc", path,
                              errno_name(errno));
      return r;
    }
    std::string text = read_file(path);
    std::istringstream in(text);
    pid_t p;
    bool found = false;
    while (in >> p) found |= p == t.pid();
    if (found) {
      r.ok = true;
      r.message = "process trees are found quickly";
    } else {
      r.message = fmt::format("{} does not list child {}: process trees are found by "
                              "scanning /proc",
                              path, t.pid());
    }
  } catch (const Error& e) {
    r.message = e.what();
  }
  return r;
}

std::vector<Result> probe_capabilities() {
  struct Cap {
    int cap;
    const char* id;
    const char* title;
    const char* yes;
    const char* no;
  };
  static const Cap caps[] = {
      {CAP_CHECKPOINT_RESTORE, "cap_checkpoint_restore", "CAP_CHECKPOINT_RESTORE",
       "set_tid and /proc/PID/map_files without CAP_SYS_ADMIN",
       "not needed when restore runs in a user+pid namespace"},
      {CAP_SYS_ADMIN, "cap_sys_admin", "CAP_SYS_ADMIN", "all restore features",
       "not needed when restore runs in a user+pid namespace"},
      {CAP_SYS_PTRACE, "cap_sys_ptrace", "CAP_SYS_PTRACE", "can attach to processes of any user",
       "only processes of this user can be dumped"},
  };
  std::vector<Result> out;
  for (const auto& c : caps) {
    bool has = has_effective_cap(c.cap);
    out.push_back(Result{c.id, c.title, Need::kOptional, has, has ? c.yes : c.no});
  }
  return out;
}

Result probe_soft_dirty() {
  Result r{"soft_dirty", "soft-dirty bits", Need::kOptional, false, {}};
  try {
    Target t;
    std::string pid = std::to_string(t.pid());
    ScopedFd fd(::open(("/proc/" + pid + "/clear_refs").c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd || ::write(fd.get(), "4", 1) != 1) {
      r.message = fmt::format("clearing /proc/{}/clear_refs: {}: incremental dumps compare "
                              "page contents",
                              pid, errno_name(errno));
      return r;
    }
    if (!t.poke()) {
      r.message = "probe child did not answer";
      return r;
    }
    int err = 0;
    auto e = pagemap_entry(pid, t.touched(), &err);
    if (!e) {
      r.message = fmt::format("reading pagemap: {}", errno_name(err));
    } else if (*e & kPmSoftDirty) {
      r.ok = true;
      r.message = "incremental dumps can track written pages";
    } else {
      r.message = "a written page is not marked soft-dirty (kernel without "
                  "CONFIG_MEM_SOFT_DIRTY?): incremental dumps compare page contents";
    }
  } catch (const Error& e) {
    r.message = e.what();
  }
  return r;
}

Result probe_shared_write_protect() {
  Result r{"shared_wp", "shared memory while the job runs", Need::kOptional, false, {}};
  std::string why = uffd::shared_write_protect_refused();
  r.ok = why.empty();
  r.message = r.ok ? "leave-running dumps write-protect shared memory (anonymous, and files in "
                     "/dev/shm; userfaultfd) instead of reading it while the job is stopped"
                   : why + ": such dumps read shared memory (anonymous, and files in /dev/shm) "
                           "while the job is stopped";
  return r;
}

Result probe_write_tracking() {
  Result r{"write_tracking", "pages written since a checkpoint", Need::kOptional, false, {}};
  const auto& s = WriteTracker::supported();
  r.ok = s.ok;
  r.message = s.ok ? "incremental dumps read only written pages (" + s.reason + ")"
                   : s.reason + ": incremental dumps compare page contents instead";
  return r;
}

std::vector<Result> probe_all() {
  std::vector<Result> out;
  out.push_back(probe_ptrace());
  out.push_back(probe_process_vm_readv());
  out.push_back(probe_pagemap());
  out.push_back(probe_prctl_mm_map());
  out.push_back(probe_set_tid());
  out.push_back(probe_userns_pidns());
  out.push_back(probe_proc_children());
  out.push_back(probe_userfaultfd());
  out.push_back(probe_pagemap_scan());
  out.push_back(probe_soft_dirty());
  out.push_back(probe_write_tracking());
  out.push_back(probe_shared_write_protect());
  for (auto& c : probe_capabilities()) out.push_back(std::move(c));
  return out;
}

int read_yama_scope() { return yama_scope(); }
bool has_cap_sys_ptrace() { return has_effective_cap(CAP_SYS_PTRACE); }

std::vector<Summary> summarize(const std::vector<Result>& results, int scope, bool cap_sys_ptrace) {
  auto find = [&](const std::string& id) -> const Result* {
    for (const auto& r : results)
      if (r.id == id) return &r;
    return nullptr;
  };
  // Required probes each side needs; a probe not run counts as missing.
  auto missing_of = [&](std::initializer_list<const char*> ids) {
    std::string m;
    for (const char* id : ids) {
      const Result* r = find(id);
      if (!r || !r->ok) m += (m.empty() ? "" : "; ") + (r ? r->title + ": " + r->message : std::string(id) + " not probed");
    }
    return m;
  };
  std::vector<Summary> out;

  Summary dump{"dump", "dump", false, {}};
  if (auto m = missing_of({"ptrace", "process_vm_readv", "pagemap"}); !m.empty()) {
    dump.why = m;
  } else if (scope >= 2 && !cap_sys_ptrace) {
    dump.why = fmt::format("Yama ptrace_scope={} allows ptrace attach only with CAP_SYS_PTRACE", scope);
  } else if (scope == 3) {
    dump.why = "Yama ptrace_scope=3: ptrace attach is disabled until reboot";
  } else if (scope == 1 && !cap_sys_ptrace) {
    dump.ok = true;
    dump.why = "only jobs started with `snap run` (Yama ptrace_scope=1: a process may be traced "
               "only by its ancestors, so `snap dump --pid` of another process fails)";
  } else {
    dump.ok = true;
    dump.why = cap_sys_ptrace ? "any process (CAP_SYS_PTRACE)"
                    : scope < 0 ? std::string("any process of this user (no Yama ptrace restriction)")
                                : fmt::format("any process of this user (Yama ptrace_scope={})", scope);
  }
  out.push_back(dump);

  const std::string common = missing_of({"prctl_mm_map"});
  Summary restore{"restore", "restore", false, {}};
  const Result* set_tid = find("set_tid");
  if (!common.empty()) restore.why = common;
  else if (set_tid && set_tid->ok) {
    restore.ok = true;
    restore.why = "each process gets its pid back with clone3 set_tid, in this pid namespace";
  } else {
    restore.why = "clone3 set_tid: " + (set_tid ? set_tid->message : std::string("not probed"));
  }
  out.push_back(restore);

  Summary userns{"restore_userns", "restore in a new user+pid namespace", false, {}};
  const Result* ns = find("userns_pidns");
  if (!common.empty()) userns.why = common;
  else if (ns && ns->ok) {
    userns.ok = true;
    userns.why = "this user can create a user and a pid namespace, map its own uid/gid there and "
                 "give processes their pids with clone3 set_tid inside";
  } else {
    userns.why = ns ? ns->message : "not probed";
  }
  out.push_back(userns);
  return out;
}

Verdict judge(const std::vector<Result>& results) {
  Verdict v;
  std::string missing;
  bool any_pid_choice = false;
  for (const auto& r : results) {
    if (r.need == Need::kRequired && !r.ok) missing += (missing.empty() ? "" : ", ") + r.title;
    if (r.need == Need::kPidChoice && r.ok) any_pid_choice = true;
  }
  if (!any_pid_choice)
    missing += std::string(missing.empty() ? "" : ", ") +
               "a way to choose pids (clone3 set_tid or user+pid namespaces)";
  v.can_dump_restore = missing.empty();
  if (!v.can_dump_restore) v.reason = "missing " + missing;
  return v;
}

}  // namespace snap::probe
