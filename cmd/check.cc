// snap check: probes the kernel features snap needs, as the invoking user,
// and says what works. Exit 0 when dump and restore can work, 1 otherwise.
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "base/log.h"
#include "cmd/command.h"
#include "tracer/probe.h"

namespace snap::cmd {
namespace {

cxxopts::Options check_options() {
  cxxopts::Options o("snap check",
                     "Probe, on this kernel and for this user, every feature snap relies on.\n"
                     "Each probe really uses the feature (forks a child and attaches to it, ...).\n"
                     "Exit status: 0 when dump and restore can work for this user, 1 otherwise.");
  o.add_options()
      ("json", "print the results as JSON")
      ("v,verbose", "say more (repeat for more)")
      ("h,help", "show this help");
  return o;
}

const char* need_name(probe::Need n) {
  switch (n) {
    case probe::Need::kRequired: return "required";
    case probe::Need::kPidChoice: return "pid-choice";
    case probe::Need::kOptional: return "optional";
  }
  return "optional";
}

// The probes fork children (and grandchildren in new namespaces). As a child
// subreaper, orphans among them come back to us instead of to a PID 1 that
// may never reap them; reap_orphans() collects them at the end.
void become_subreaper() {
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
    vlog("PR_SET_CHILD_SUBREAPER: {}", std::strerror(errno));
}

void reap_orphans() {
  int st;
  while (::waitpid(-1, &st, WNOHANG | __WALL) > 0) {
  }
}

int run_check(const cxxopts::ParseResult& args) {
  become_subreaper();
  std::vector<probe::Result> results = probe::probe_all();
  reap_orphans();
  probe::Verdict v = probe::judge(results);
  const int yama = probe::read_yama_scope();
  auto summary = probe::summarize(results, yama, probe::has_cap_sys_ptrace());

  if (args.count("json")) {
    nlohmann::json j;
    j["uid"] = ::getuid();
    j["euid"] = ::geteuid();
    j["can_dump_restore"] = v.can_dump_restore;
    j["reason"] = v.reason;
    j["yama_ptrace_scope"] = yama < 0 ? nlohmann::json(nullptr) : nlohmann::json(yama);
    j["summary"] = nlohmann::json::array();
    for (const auto& s : summary)
      j["summary"].push_back({{"id", s.id}, {"title", s.title}, {"ok", s.ok}, {"why", s.why}});
    j["probes"] = nlohmann::json::array();
    for (const auto& r : results)
      j["probes"].push_back({{"id", r.id},
                             {"title", r.title},
                             {"ok", r.ok},
                             {"need", need_name(r.need)},
                             {"message", r.message}});
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    size_t width = 0;
    for (const auto& r : results) width = std::max(width, r.title.size());
    for (const auto& r : results)
      std::printf("%-8s %-*s  %s\n", r.ok ? "ok" : "missing", static_cast<int>(width),
                  r.title.c_str(), r.message.c_str());
    // What works for this user, one line each: "dump: yes: why".
    for (const auto& s : summary)
      std::printf("%s: %s: %s\n", s.title.c_str(), s.ok ? "yes" : "no", s.why.c_str());
    if (v.can_dump_restore)
      std::printf("snap can dump and restore for this user\n");
    else
      std::printf("snap cannot dump and restore for this user: %s\n", v.reason.c_str());
  }
  return v.can_dump_restore ? kExitOk : kExitFailure;
}

}  // namespace

const Command kCheck = {"check", "check which kernel features snap can use here",
                        check_options, run_check};

}  // namespace snap::cmd
