#include "restore/tree.h"

#include <algorithm>
#include <fmt/core.h>

#include "base/error.h"

namespace snap::restore {

namespace {

std::string name(const image::Process& p) { return fmt::format("pid {} ({})", p.pid, p.comm); }

}  // namespace

std::vector<pid_t> TreePlan::all_ids() const {
  std::vector<pid_t> ids;
  for (const auto& [pid, n] : nodes) {
    ids.push_back(pid);
    for (size_t i = 1; i < n.proc->threads.size(); i++) ids.push_back(n.proc->threads[i].tid);
  }
  for (const auto& h : helpers) ids.push_back(h.pid);
  return ids;
}

TreePlan plan_tree(const image::Checkpoint& ckpt) {
  constexpr const char* kHint = "the image may be damaged, or was written by another program";
  if (ckpt.processes.empty()) throw Error("the image holds no process", kHint);
  TreePlan plan;
  const image::Process& root = ckpt.processes[0];
  if (root.zombie) throw Error(name(root) + ", the root of the image, is a zombie", kHint);
  plan.root = root.pid;
  if (root.sid != root.pid) plan.external_sid = root.sid;
  if (root.pgid != root.pid) plan.external_pgid = root.pgid;

  for (const auto& p : ckpt.processes) {
    TreePlan::Node node;
    node.proc = &p;
    if (!plan.nodes.emplace(p.pid, std::move(node)).second)
      throw Error(fmt::format("pid {} appears twice in the image", p.pid), kHint);
    if (p.pid == root.pid) continue;
    auto parent = plan.nodes.find(p.ppid);
    if (parent == plan.nodes.end())
      throw Error(fmt::format("{} has parent {}, which is not in the image before it", name(p), p.ppid),
                  kHint);
    if (parent->second.proc->zombie)
      throw Error(fmt::format("{} has a zombie as its parent", name(p)), kHint);
  }
  // Live children first: a zombie child joins its group while it exists.
  for (bool zombies : {false, true})
    for (const auto& p : ckpt.processes)
      if (p.pid != root.pid && p.zombie == zombies)
        plan.nodes.at(p.ppid).children.push_back(&p);

  std::map<pid_t, GroupHelper> helpers;
  for (const auto& p : ckpt.processes) {
    auto& n = plan.nodes.at(p.pid);
    const image::Process* parent = p.pid == root.pid ? nullptr : plan.nodes.at(p.ppid).proc;
    // Sessions are inherited through fork, or made by setsid.
    if (p.sid == p.pid) {
      n.setsid = true;
      if (p.pgid != p.pid)
        throw Error(fmt::format("{} leads session {} but is in process group {}", name(p), p.sid,
                                p.pgid),
                    kHint);
      continue;
    }
    if (parent && p.sid != parent->sid)
      throw Error(fmt::format("{} is in session {}, its parent {} in session {}, and the leader "
                              "of session {} had exited before the dump",
                              name(p), p.sid, parent->pid, parent->sid, p.sid),
                  "restoring a session whose leader has exited is not supported yet");
    // Process groups: its own, the one outside the image the root was in,
    // another process's, or one whose leader had exited (a helper holds it).
    if (p.pgid == p.pid) {
      n.group_leader = true;
    } else if (p.pgid == plan.external_pgid && !plan.nodes.count(p.pgid)) {
      n.join_external_group = p.pid != root.pid;
    } else if (auto leader = plan.nodes.find(p.pgid); leader != plan.nodes.end()) {
      const image::Process& l = *leader->second.proc;
      if (l.pgid != l.pid)
        throw Error(fmt::format("{} is in process group {}, but pid {} has left that group",
                                name(p), p.pgid, l.pid),
                    "restoring such a group is not supported yet");
      if (l.sid != p.sid)
        throw Error(fmt::format("{} is in process group {} of another session", name(p), p.pgid),
                    kHint);
      n.join_group = p.pgid;
    } else {
      // parent is set: the root's group is its own or external.
      helpers.emplace(p.pgid, GroupHelper{p.pgid, parent->pid});
      n.join_group = p.pgid;
    }
  }
  for (const auto& [pgid, h] : helpers) {
    plan.helpers.push_back(h);
    plan.nodes.at(h.creator).helpers.push_back(h);
  }
  return plan;
}

}  // namespace snap::restore
