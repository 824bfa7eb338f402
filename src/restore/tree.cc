#include "restore/tree.h"

#include <algorithm>
#include <set>
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
  for (const auto& h : session_helpers) ids.push_back(h.pid);
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
  // Processes whose parent is in another session (given to a subreaper when
  // their own parent ended): forked by the session's leader when it is that
  // parent's child too, else, where the leader had exited, by a helper that
  // takes the session's id.
  std::map<pid_t, SessionHelper> sessions;
  std::set<pid_t> in_session;  // forked by their session's leader or helper
  for (const auto& p : ckpt.processes) {
    if (p.pid == root.pid || p.sid == p.pid) continue;
    const image::Process& parent = *plan.nodes.at(p.ppid).proc;
    if (p.sid == parent.sid) continue;
    if (auto leader = plan.nodes.find(p.sid);
        leader != plan.nodes.end() && leader->second.proc->sid == p.sid) {
      const image::Process& l = *leader->second.proc;
      if (l.ppid != p.ppid || l.zombie || p.zombie || p.pid == root.pid)
        throw Error(fmt::format("{} is in session {}, which pid {} leads, but its parent {} is in "
                                "session {}, and {} is not that parent's {}",
                                name(p), p.sid, p.sid, parent.pid, parent.sid, p.sid,
                                l.zombie || p.zombie ? "live child" : "child"),
                    "restoring such a session is not supported yet");
      leader->second.siblings.push_back(&p);
      in_session.insert(p.pid);
      continue;
    }
    auto refuse = [&](const std::string& why) {
      return Error(fmt::format("{} is in session {}, its parent {} in session {}, and the leader "
                               "of session {} had exited before the dump; {}",
                               name(p), p.sid, parent.pid, parent.sid, p.sid, why),
                   "restoring such a session is not supported yet");
    };
    if (p.zombie) throw refuse("it is a zombie");
    if (plan.nodes.count(p.sid)) throw refuse(fmt::format("pid {} is another process now", p.sid));
    auto [it, fresh] = sessions.emplace(p.sid, SessionHelper{p.sid, parent.pid, {}});
    if (!fresh && it->second.creator != parent.pid)
      throw refuse(fmt::format("pid {} of the session has another parent ({})",
                               it->second.members[0]->pid, it->second.creator));
    it->second.members.push_back(&p);
    in_session.insert(p.pid);
  }
  auto forked_in_session = [&](const image::Process& p) { return in_session.count(p.pid) > 0; };

  // Live children first: a zombie child joins its group while it exists.
  for (bool zombies : {false, true})
    for (const auto& p : ckpt.processes)
      if (p.pid != root.pid && p.zombie == zombies && !forked_in_session(p))
        plan.nodes.at(p.ppid).children.push_back(&p);

  // The group each process is born in (then joins another, if its own is
  // another): its own, the session's first (its leader's or helper's, for
  // one they fork), or the one its parent was born in; 0: snap restore's
  // (the root's, when external).
  std::map<pid_t, pid_t> born_in;
  std::map<pid_t, GroupHelper> helpers;
  for (const auto& p : ckpt.processes) {
    auto& n = plan.nodes.at(p.pid);
    const image::Process* parent = p.pid == root.pid ? nullptr : plan.nodes.at(p.ppid).proc;
    // Sessions are inherited through fork, or made by setsid (a session
    // helper's for one whose leader had exited).
    if (p.sid == p.pid) {
      n.setsid = true;
      born_in[p.pid] = p.pid;
      if (p.pgid != p.pid)
        throw Error(fmt::format("{} leads session {} but is in process group {}", name(p), p.sid,
                                p.pgid),
                    kHint);
      continue;
    }
    born_in[p.pid] = p.pgid == p.pid   ? p.pid
                     : !parent         ? 0
                     : forked_in_session(p) ? p.sid
                                       : born_in.at(parent->pid);
    // Process groups: its own, the one outside the image the root was in,
    // another process's, the first of a session whose leader had exited
    // (its helper's), or one whose leader had exited (a helper holds it).
    if (p.pgid == p.pid) {
      n.group_leader = true;
    } else if (sessions.count(p.pgid) && p.sid == p.pgid && !plan.nodes.count(p.pgid)) {
      // Born in it, or joins it while a process born in it is there still.
      if (born_in[p.pid] != p.pgid) n.join_group = p.pgid;
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
      // parent is set: the root's group is its own or external. A helper
      // makes the group in its creator's session: the parent's, unless a
      // session helper forks this process.
      if (forked_in_session(p))
        throw Error(fmt::format("{} is in process group {} of session {}, whose leader had exited "
                                "before the dump, and its parent {} is in another session",
                                name(p), p.pgid, p.sid, p.ppid),
                    "restoring such a group is not supported yet");
      helpers.emplace(p.pgid, GroupHelper{p.pgid, parent->pid});
      n.join_group = p.pgid;
    }
  }
  for (const auto& [pgid, h] : helpers) {
    plan.helpers.push_back(h);
    plan.nodes.at(h.creator).helpers.push_back(h);
  }
  for (const auto& [sid, h] : sessions) {
    // A process joining the session's first group finds it only if one
    // born in it stays there; nothing holds it once its helper has ended.
    bool held = false, joined = false;
    for (const auto& p : ckpt.processes)
      if (p.pgid == sid && p.sid == sid) (plan.nodes.at(p.pid).join_group ? joined : held) = true;
    if (joined && !held)
      throw Error(fmt::format("process group {} of session {}, whose leader had exited before the "
                              "dump, holds only processes that were born in other groups",
                              sid, sid),
                  "restoring such a session is not supported yet");
    plan.session_helpers.push_back(h);
    plan.nodes.at(h.creator).session_helpers.push_back(h);
  }
  return plan;
}

}  // namespace snap::restore
