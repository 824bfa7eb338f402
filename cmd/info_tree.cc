// snap info's text for the process tree and what its processes share
// (the facts: job/describe_tree.h).
#include "cmd/info_tree.h"

#include <cstdio>
#include <map>
#include <string>

#include <fmt/core.h>

namespace snap::cmd {

namespace {

std::string refs_text(const ojson& refs) {
  std::string s;
  for (const auto& r : refs)
    s += fmt::format("{}{}:{}", s.empty() ? "" : " ", r["pid"].get<int>(), r["fd"].get<int>());
  return s.empty() ? "-" : s;
}

}  // namespace

void print_tree_and_sharing(const ojson& doc) {
  std::map<int, const ojson*> by_pid;
  for (const auto& p : doc["processes"]) by_pid[p["pid"].get<int>()] = &p;
  if (by_pid.size() > 1 || (!doc["processes"].empty() && doc["processes"][0]["zombie"].get<bool>())) {
    std::printf("\nprocess tree\n");
    for (const auto& t : doc["tree"]) {
      const ojson& p = *by_pid.at(t["pid"].get<int>());
      std::string notes;
      if (p["zombie"].get<bool>()) notes += "  zombie (" + p["exit_text"].get<std::string>() + ")";
      if (!p["child_subreaper"].is_null() && p["child_subreaper"].get<int>())
        notes += "  child subreaper";
      std::printf("  %*s%d %s  ppid %d  pgid %d  sid %d%s\n", 2 * t["depth"].get<int>(), "",
                  p["pid"].get<int>(), p["comm"].get<std::string>().c_str(), p["ppid"].get<int>(),
                  p["pgid"].get<int>(), p["sid"].get<int>(), notes.c_str());
    }
  }
  const auto& sh = doc["sharing"];
  if (sh["open_files"].empty() && sh["pipes"].empty() && sh["unix_socket_pairs"].empty() &&
      sh["shared_memory"].empty())
    return;
  std::printf("\nshared between processes\n");
  for (const auto& f : sh["open_files"])
    std::printf("  open file #%llu  %s %s: %s\n",
                static_cast<unsigned long long>(f["file_id"].get<uint64_t>()),
                f["type"].get<std::string>().c_str(), f["path"].get<std::string>().c_str(),
                refs_text(f["fds"]).c_str());
  for (const auto& p : sh["pipes"])
    std::printf("  pipe %llu: writers %s -> readers %s\n",
                static_cast<unsigned long long>(p["inode"].get<uint64_t>()),
                refs_text(p["writers"]).c_str(), refs_text(p["readers"]).c_str());
  for (const auto& sp : sh["unix_socket_pairs"]) {
    const auto& a = sp["ends"][0];
    const auto& b = sp["ends"][1];
    std::printf("  unix %s %s <-> %s  queued %llu B/%llu msg <-> %llu B/%llu msg\n",
                sp["type"].get<std::string>().c_str(), refs_text(a["fds"]).c_str(),
                refs_text(b["fds"]).c_str(),
                static_cast<unsigned long long>(a["queued_bytes"].get<uint64_t>()),
                static_cast<unsigned long long>(a["queued_messages"].get<uint64_t>()),
                static_cast<unsigned long long>(b["queued_bytes"].get<uint64_t>()),
                static_cast<unsigned long long>(b["queued_messages"].get<uint64_t>()));
  }
  for (const auto& m : sh["shared_memory"]) {
    std::string pids;
    for (const auto& p : m["pids"]) pids += " " + std::to_string(p.get<int>());
    std::printf("  shared memory %s inode %llu: pids%s (%llu pages dumped)\n",
                m["dev"].get<std::string>().c_str(),
                static_cast<unsigned long long>(m["inode"].get<uint64_t>()), pids.c_str(),
                static_cast<unsigned long long>(m["pages_dumped"].get<uint64_t>()));
  }
}

}  // namespace snap::cmd
