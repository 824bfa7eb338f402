#include "restore/credentials.h"

#include <fcntl.h>
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

void restore_credentials(SyscallBatch& batch, const image::Process& p) {
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
