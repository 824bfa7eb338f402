#include "restore/credentials.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"
#include "tracer/proc.h"

namespace snap::restore {

namespace {

const char* rlimit_name(int r) {
  static const char* names[] = {"RLIMIT_CPU",   "RLIMIT_FSIZE",   "RLIMIT_DATA",    "RLIMIT_STACK",
                                "RLIMIT_CORE",  "RLIMIT_RSS",     "RLIMIT_NPROC",   "RLIMIT_NOFILE",
                                "RLIMIT_MEMLOCK", "RLIMIT_AS",    "RLIMIT_LOCKS",   "RLIMIT_SIGPENDING",
                                "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_RTPRIO",  "RLIMIT_RTTIME"};
  return r >= 0 && r < 16 ? names[r] : "RLIMIT_?";
}

std::string limit_text(uint64_t v) { return v == RLIM_INFINITY ? "unlimited" : std::to_string(v); }

// Every capability this kernel knows (bits 0 .. cap_last_cap).
uint64_t all_capabilities() {
  static const uint64_t all = [] {
    auto text = proc::try_read_file("/proc/sys/kernel/cap_last_cap");
    const int last = text ? std::atoi(text->c_str()) : 40;
    return last >= 63 ? ~uint64_t{0} : (uint64_t{1} << (last + 1)) - 1;
  }();
  return all;
}

// snap restore's own capability sets (read once: they do not change).
const image::Capabilities& own_capabilities() {
  static const image::Capabilities own =
      proc::read_status(::getpid()).caps.value_or(image::Capabilities{});
  return own;
}

// What a thread of the job has once its ids are set, with no capability
// call: in a fresh user namespace none (the drop that was always made);
// elsewhere snap restore's own, which setresuid() to a uid other than 0
// clears but for the bounding set.
image::Capabilities caps_after_ids(const image::Process& p, bool fresh_namespace) {
  if (fresh_namespace) return {0, 0, 0, all_capabilities(), 0};
  image::Capabilities c = own_capabilities();
  c.ambient = 0;
  if (p.uids[0] != 0 && p.uids[1] != 0 && p.uids[2] != 0) c.permitted = c.effective = 0;
  return c;
}

void queue_capset(SyscallBatch& batch, const image::Capabilities& c, const std::string& what) {
  struct {
    uint32_t version;
    int32_t pid;
  } header{0x20080522, 0};  // _LINUX_CAPABILITY_VERSION_3, this thread
  // struct __user_cap_data_struct[2]: {effective, permitted, inheritable},
  // the low 32 capabilities, then the high ones.
  const uint32_t data[6] = {static_cast<uint32_t>(c.effective), static_cast<uint32_t>(c.permitted),
                            static_cast<uint32_t>(c.inheritable),
                            static_cast<uint32_t>(c.effective >> 32),
                            static_cast<uint32_t>(c.permitted >> 32),
                            static_cast<uint32_t>(c.inheritable >> 32)};
  batch.reserve(1, sizeof header + sizeof data + 16);
  uint64_t h = batch.put_value(header).as_int();
  batch.add(what, SYS_capset, h, batch.put_value(data).as_int());
}

// Drops from the thread's bounding set what the job's lacked (needs
// CAP_SETPCAP: before the ids or the capset give it up).
void queue_bounding(SyscallBatch& batch, const image::Capabilities& c) {
  const uint64_t drop = all_capabilities() & ~c.bounding;
  for (int cap = 0; cap < 64; cap++)
    if ((drop >> cap) & 1) {
      batch.reserve(1, 0);
      batch.add(fmt::format("prctl(PR_CAPBSET_DROP, {})", cap), SyscallBatch::kMayFail,
                SYS_prctl, PR_CAPBSET_DROP, static_cast<uint64_t>(cap));
    }
}

void queue_ambient(SyscallBatch& batch, const image::Capabilities& c) {
  for (int cap = 0; cap < 64; cap++)
    if ((c.ambient >> cap) & 1) {
      batch.reserve(1, 0);
      batch.add(fmt::format("prctl(PR_CAP_AMBIENT_RAISE, {})", cap), SYS_prctl, PR_CAP_AMBIENT,
                PR_CAP_AMBIENT_RAISE, static_cast<uint64_t>(cap));
    }
}

// Its supplementary groups, gids and uids, where they are not the caller's.
void set_ids(SyscallBatch& batch, const image::Process& p) {
  const auto& u = p.uids;
  const auto& g = p.gids;
  bool same = ::geteuid() == u[1] && ::getuid() == u[0] && ::getegid() == g[1] && ::getgid() == g[0] &&
              u[0] == u[1] && u[1] == u[2] && u[2] == u[3] && g[0] == g[1] && g[1] == g[2] &&
              g[2] == g[3] && !p.groups;
  if (same) return;
  if (p.groups) {
    std::vector<uint32_t> groups = *p.groups;
    if (groups.size() > 1000) groups.resize(1000);  // one page
    batch.reserve(1, groups.size() * 4);
    batch.add("setgroups", SYS_setgroups, groups.size(),
              batch.put(groups.data(), groups.size() * 4).as_int());
  }
  batch.reserve(4, 0);
  batch.add("setresgid", SYS_setresgid, g[0], g[1], g[2]);
  batch.add("setfsgid", SyscallBatch::kMayFail, SYS_setfsgid, g[3]);
  batch.add("setresuid", SYS_setresuid, u[0], u[1], u[2]);
  batch.add("setfsuid", SyscallBatch::kMayFail, SYS_setfsuid, u[3]);
}

}  // namespace

std::vector<std::string> check_credentials(const image::Checkpoint& ckpt, bool fresh_namespace) {
  std::vector<std::string> warnings;
  const uid_t me = ::geteuid();
  const gid_t my_gid = ::getegid();
  for (const auto& p : ckpt.processes) {
    if (p.zombie) continue;
    auto uids = fmt::format("{}", fmt::join(p.uids, "/"));
    auto gids = fmt::format("{}", fmt::join(p.gids, "/"));
    bool own_uids = std::all_of(p.uids.begin(), p.uids.end(), [&](uint32_t u) { return u == me; });
    bool own_gids = std::all_of(p.gids.begin(), p.gids.end(), [&](uint32_t g) { return g == my_gid; });
    if ((fresh_namespace || me != 0) && !own_uids)
      throw Error(fmt::format("pid {} ({}) ran with uids {} (real/effective/saved/fs); this "
                              "restore can give it uid {} only",
                              p.pid, p.comm, uids, me),
                  "a setuid program, or another user's job: restore it as root, as that user, or "
                  "not at all");
    if ((fresh_namespace || me != 0) && !own_gids)
      throw Error(fmt::format("pid {} ({}) ran with gids {} (real/effective/saved/fs); this "
                              "restore can give it gid {} only",
                              p.pid, p.comm, gids, my_gid),
                  "a setgid program, or the job changed its group (newgrp, sg): restore it as "
                  "root, or from a shell with that group");
    if (!fresh_namespace && p.caps) {
      const image::Capabilities own = own_capabilities();
      const uint64_t missing =
          (p.caps->permitted | p.caps->effective | p.caps->inheritable | p.caps->ambient) &
          ~own.permitted;
      if (missing)
        throw Error(fmt::format("pid {} ({}) held capabilities {:#x} that this restore does not "
                                "have (its own: {:#x})",
                                p.pid, p.comm, missing, own.permitted),
                    "restore it as root with every capability, as it was dumped");
    }
    if (fresh_namespace && p.groups && !p.groups->empty())
      warnings.push_back(fmt::format(
          "pid {}: its supplementary groups ({}) show as 'nogroup' in the user namespace; files "
          "it reaches through them stay reachable",
          p.pid, fmt::join(*p.groups, ",")));
    for (const auto& r : p.rlimits) {
      rlimit now{};
      if (::getrlimit(static_cast<__rlimit_resource>(r.resource), &now) != 0) continue;
      if (r.max != RLIM_INFINITY && (now.rlim_max == RLIM_INFINITY || r.max <= now.rlim_max))
        continue;
      if (now.rlim_max == RLIM_INFINITY) continue;
      warnings.push_back(fmt::format("pid {}: hard limit {} was {}; this user can set {} at most, "
                                     "which the job gets",
                                     p.pid, rlimit_name(r.resource), limit_text(r.max),
                                     limit_text(now.rlim_max)));
    }
  }
  return warnings;
}

void restore_credentials(SyscallBatch& batch, const image::Process& p, bool fresh_namespace) {
  const image::Capabilities natural = caps_after_ids(p, fresh_namespace);
  const image::Capabilities want = p.caps.value_or(natural);
  const bool set_caps = want != natural || fresh_namespace;
  if (set_caps) queue_bounding(batch, want);
  // Capabilities the job holds as a uid other than 0 survive the change of
  // ids only this way (and the job's own keep-capabilities flag, not in the
  // image, is off after it, as after most programs' start).
  const bool keep = !fresh_namespace && set_caps && want.permitted != 0;
  if (keep) {
    batch.reserve(1, 0);
    batch.add("prctl(PR_SET_KEEPCAPS, 1)", SYS_prctl, PR_SET_KEEPCAPS, 1);
  }
  if (!fresh_namespace) set_ids(batch, p);
  if (set_caps) {
    queue_capset(batch, want, fresh_namespace && !p.caps
                                  ? "capset (dropping the namespace's capabilities)"
                                  : "capset (the job's capabilities)");
    queue_ambient(batch, want);
  }
  if (keep) {
    batch.reserve(1, 0);
    batch.add("prctl(PR_SET_KEEPCAPS, 0)", SYS_prctl, PR_SET_KEEPCAPS, 0);
  }
}

void adopt_login_uid(const image::Checkpoint& ckpt) {
  constexpr uint32_t kUnset = 4294967295u;
  auto own = proc::try_read_file("/proc/self/loginuid");
  if (!own || std::strtoul(own->c_str(), nullptr, 10) != kUnset) return;
  std::optional<uint32_t> job;
  for (const auto& p : ckpt.processes) {
    if (p.zombie || !p.loginuid) continue;
    if (job && *job != *p.loginuid) return;
    job = p.loginuid;
  }
  if (!job || *job == kUnset) return;
  ScopedFd fd(::open("/proc/self/loginuid", O_WRONLY | O_CLOEXEC));
  std::string v = std::to_string(*job);
  if (!fd || ::write(fd.get(), v.data(), v.size()) != static_cast<ssize_t>(v.size()))
    vlog("restore: could not take the job's audit login uid {}: {}", v, std::strerror(errno));
}

}  // namespace snap::restore
