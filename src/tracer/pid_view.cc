#include "tracer/pid_view.h"

#include <charconv>

#include "base/error.h"
#include "tracer/proc.h"

namespace snap::pidview {

namespace {

std::vector<pid_t> parse_values(std::string_view rest, std::string_view key) {
  std::vector<pid_t> out;
  size_t i = 0;
  while (i < rest.size()) {
    while (i < rest.size() && (rest[i] == ' ' || rest[i] == '\t')) i++;
    size_t j = i;
    while (j < rest.size() && rest[j] != ' ' && rest[j] != '\t') j++;
    if (j > i) {
      pid_t v = 0;
      auto [p, ec] = std::from_chars(rest.data() + i, rest.data() + j, v);
      if (ec != std::errc() || p != rest.data() + j || v < 0)
        throw Error("cannot parse " + std::string(key) + " value '" +
                    std::string(rest.substr(i, j - i)) + "' from /proc/PID/status");
      out.push_back(v);
    }
    i = j;
  }
  return out;
}

std::string str(pid_t p) { return std::to_string(p); }

}  // namespace

NsIds parse_ns_ids(std::string_view text) {
  NsIds ids;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find('\n', i);
    if (j == std::string_view::npos) j = text.size();
    auto line = text.substr(i, j - i);
    i = j + 1;
    auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    auto key = line.substr(0, colon);
    std::vector<pid_t>* dst = key == "NSpid"    ? &ids.pid
                              : key == "NSpgid" ? &ids.pgid
                              : key == "NSsid"  ? &ids.sid
                                                : nullptr;
    if (dst) *dst = parse_values(line.substr(colon + 1), key);
  }
  return ids;
}

PidView PidView::build(const std::vector<ProcIds>& procs, pid_t root_parent) {
  PidView v;
  if (procs.empty()) return v;
  const ProcIds& root = procs[0];
  v.root_host_ = root.host;
  v.root_parent_ = root_parent;
  const size_t depth = root.ns.pid.size();
  v.own_ = depth > 1;
  for (const auto& p : procs) {
    if (p.ns.pid.size() != depth)
      throw Error("pid " + str(p.host) + " is " + (p.ns.pid.size() > depth ? "in a deeper" : "in another") +
                  " pid namespace than pid " + str(root.host) +
                  " (NSpid has " + str(static_cast<pid_t>(p.ns.pid.size())) + " levels, the root's " +
                  str(static_cast<pid_t>(depth)) +
                  "): snap dumps a tree that lives in one pid namespace only");
    if (!p.pid_ns.empty() && !root.pid_ns.empty() && p.pid_ns != root.pid_ns)
      throw Error("pid " + str(p.host) + " is in pid namespace " + p.pid_ns + ", pid " +
                  str(root.host) + " in " + root.pid_ns +
                  ": snap dumps a tree that lives in one pid namespace only");
    if (depth == 0) continue;  // no NSpid (kernel < 4.1): the identity
    if (p.ns.pid.front() != p.host)
      throw Error("pid " + str(p.host) + ": /proc/PID/status NSpid starts with " +
                  str(p.ns.pid.front()) + ", not its pid (is /proc of another pid namespace?)");
    v.ids_[p.host] = p.ns.pid.back();
    if (!p.ns.pgid.empty()) v.pgid_[p.host] = p.ns.pgid.back();
    if (!p.ns.sid.empty()) v.sid_[p.host] = p.ns.sid.back();
    for (auto [host_tid, tid] : p.threads) v.ids_[host_tid] = tid;
  }
  return v;
}

pid_t PidView::pid(pid_t host) const {
  auto it = ids_.find(host);
  return it == ids_.end() ? host : it->second;
}

std::string translate_notify(const std::string& notify, const PidView& view) {
  auto dot = notify.rfind('.');
  if (dot == std::string::npos) return notify;
  pid_t id = 0;
  const char* b = notify.data() + dot + 1;
  const char* e = notify.data() + notify.size();
  auto [p, ec] = std::from_chars(b, e, id);
  if (ec != std::errc() || p != e || id == 0) return notify;
  return notify.substr(0, dot + 1) + std::to_string(view.pid(id));
}

void PidView::apply(image::Checkpoint& c) const {
  c.pid_namespace = own_ ? "own" : "host";
  if (!own_) return;  // the identity
  for (auto& p : c.processes) {
    const pid_t host = p.pid;
    p.ppid = host == root_host_ ? root_parent_ : pid(p.ppid);
    if (auto it = pgid_.find(host); it != pgid_.end()) p.pgid = it->second;
    if (auto it = sid_.find(host); it != sid_.end()) p.sid = it->second;
    for (auto& t : p.threads) t.tid = pid(t.tid);
    for (auto& t : p.posix_timers) t.notify = translate_notify(t.notify, *this);
    for (auto& f : p.fds)
      if (f.owner && f.owner->pid) f.owner->pid = pid(f.owner->pid);
    for (auto& f : p.fds)
      if (f.pidfd_pid) f.pidfd_pid = pid(f.pidfd_pid);
    p.pid = pid(host);
  }
  for (auto& t : c.ptys) {
    if (t.session) t.session = pid(t.session);
    if (t.fg_pgrp) t.fg_pgrp = pid(t.fg_pgrp);
  }
}

pid_t own_tid(pid_t pid, pid_t tid) {
  auto ids = parse_ns_ids(proc::read_file("/proc/" + str(pid) + "/task/" + str(tid) + "/status"));
  return ids.pid.empty() ? tid : ids.pid.back();
}

pid_t own_pid(pid_t pid) {
  auto ids = parse_ns_ids(proc::read_file("/proc/" + str(pid) + "/status"));
  return ids.pid.empty() ? pid : ids.pid.back();
}

bool sees_snaps_pids(pid_t pid) {
  auto text = proc::try_read_file("/proc/" + str(pid) + "/status");
  return text && parse_ns_ids(*text).pid.size() <= 1;
}

void check_not_namespace_init(pid_t pid) {
  const std::string dir = "/proc/" + str(pid);
  auto status = proc::try_read_file(dir + "/status");
  if (!status) return;  // gone: the dump says so where it seizes it
  const NsIds ids = parse_ns_ids(*status);
  if (ids.pid.size() < 2 || ids.pid.back() != 1) return;
  std::string children = proc::try_read_file(dir + "/task/" + str(pid) + "/children").value_or("");
  while (!children.empty() && children.back() == ' ') children.pop_back();
  throw Error("pid " + str(pid) + " is the init of its own pid namespace (pid 1 there: a "
                  "container's init, as bwrap --unshare-pid, apptainer --pid or podman start "
                  "one): a restore gives the job's pid namespace an init of snap's own, so it "
                  "could not bring this one back",
              children.empty()
                  ? "dump the job that runs under it, once it has started"
                  : "dump the job under it instead: snap dump --pid " +
                        children.substr(0, children.find(' ')) +
                        (children.find(' ') == std::string::npos
                             ? ""
                             : " (its children: " + children + "; snap dumps one tree)"));
}

PidView read_pid_view(const image::Checkpoint& c) {
  std::vector<ProcIds> procs;
  for (const auto& p : c.processes) {
    const std::string dir = "/proc/" + str(p.pid);
    ProcIds ids;
    ids.host = p.pid;
    ids.ns = parse_ns_ids(proc::read_file(dir + "/status"));
    // A zombie's namespaces may be gone already; its depth still counts.
    try {
      ids.pid_ns = proc::read_link(dir + "/ns/pid");
    } catch (const Error&) {
      if (!p.zombie) throw;
    }
    for (const auto& t : p.threads) {
      if (t.tid == p.pid) {
        if (!ids.ns.pid.empty()) ids.threads[t.tid] = ids.ns.pid.back();
        continue;
      }
      // One level (the job shares /proc's pid namespace): every thread's
      // id there is its tid, as /proc names it; no need to read it, which
      // costs ~15 us a thread while the job is stopped.
      if (ids.ns.pid.size() == 1) {
        ids.threads[t.tid] = t.tid;
        continue;
      }
      auto tns = parse_ns_ids(proc::read_file(dir + "/task/" + str(t.tid) + "/status"));
      if (tns.pid.size() != ids.ns.pid.size())
        throw Error("pid " + str(p.pid) + " thread " + str(t.tid) +
                    ": NSpid levels differ from its process's");
      if (!tns.pid.empty()) ids.threads[t.tid] = tns.pid.back();
    }
    procs.push_back(std::move(ids));
  }
  if (procs.empty()) return {};
  // The root's parent as the job sees it: getppid() inside the namespace
  // is 0 when the parent is outside it (the job's root is the namespace's
  // pid 1, or its parent is in an ancestor namespace).
  pid_t root_parent = c.processes[0].ppid;
  if (procs[0].ns.pid.size() > 1) {
    root_parent = 0;
    const std::string pdir = "/proc/" + str(c.processes[0].ppid);
    if (c.processes[0].ppid > 0) {
      auto pstatus = proc::try_read_file(pdir + "/status");
      std::string pns;
      try {
        pns = proc::read_link(pdir + "/ns/pid");
      } catch (const Error&) {
      }
      if (pstatus && pns == procs[0].pid_ns) {
        auto pids = parse_ns_ids(*pstatus);
        if (pids.pid.size() == procs[0].ns.pid.size()) root_parent = pids.pid.back();
      }
    }
  }
  return PidView::build(procs, root_parent);
}

}  // namespace snap::pidview
