#include "image/manifest.h"

#include <iterator>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "base/cpus.h"
#include "base/error.h"
#include "image/manifest_names.h"

namespace snap::image {

namespace {

using ojson = nlohmann::ordered_json;


std::string to_hex(const std::vector<uint8_t>& b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(b.size() * 2, '\0');
  for (size_t i = 0; i < b.size(); ++i) {
    s[2 * i] = kDigits[b[i] >> 4];
    s[2 * i + 1] = kDigits[b[i] & 15];
  }
  return s;
}

// ---- encoding ----

ojson encode(const ThreadState& t) {
  ojson j;
  j["tid"] = t.tid;
  j["gpregs"] = to_hex(t.gpregs);
  j["xsave"] = to_hex(t.xsave);
  j["sigmask"] = t.sigmask;
  j["pending"] = ojson::array();
  for (const auto& s : t.pending) j["pending"].push_back(to_hex(s));
  j["pending_shared"] = ojson::array();
  for (const auto& s : t.pending_shared) j["pending_shared"].push_back(to_hex(s));
  j["in_syscall"] = t.in_syscall;
  j["syscall_nr"] = t.syscall_nr;
  if (t.sigaltstack) j["sigaltstack"] = *t.sigaltstack;
  if (t.clear_child_tid) j["clear_child_tid"] = *t.clear_child_tid;
  if (t.rseq) j["rseq"] = *t.rseq;
  if (!t.comm.empty()) j["comm"] = t.comm;
  if (t.robust_list) j["robust_list"] = *t.robust_list;
  if (t.sched) {
    ojson s;
    s["policy"] = t.sched->policy;
    if (t.sched->reset_on_fork) s["reset_on_fork"] = true;
    s["nice"] = t.sched->nice;
    s["priority"] = t.sched->priority;
    if (t.sched->runtime || t.sched->deadline || t.sched->period) {
      s["runtime"] = t.sched->runtime;
      s["deadline"] = t.sched->deadline;
      s["period"] = t.sched->period;
    }
    if (t.sched->ioprio) s["ioprio"] = t.sched->ioprio;
    j["sched"] = s;
  }
  if (!t.cpus.empty()) j["cpus"] = cpu_list_text(t.cpus);
  if (!t.mempolicy.empty()) j["mempolicy"] = t.mempolicy;
  if (t.seccomp) {
    ojson sc;
    if (t.seccomp->strict) sc["strict"] = true;
    sc["filters"] = ojson::array();
    for (const auto& f : t.seccomp->filters) {
      ojson jf;
      jf["program"] = to_hex(f.program);
      if (f.flags) jf["flags"] = f.flags;
      sc["filters"].push_back(jf);
    }
    j["seccomp"] = sc;
  }
  return j;
}

// A process may have tens of thousands of mappings: they are written as
// text directly (the same compact JSON an ojson of these keys would give), not
// built as JSON objects first. Strings go through nlohmann's serializer, so
// they are escaped (and refused when not UTF-8) exactly as elsewhere.
void append_string(std::string& out, const std::string& v) {
  bool plain = true;  // printable ASCII, nothing to escape: as it is
  for (char ch : v) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      plain = false;
      break;
    }
  }
  if (!plain) {
    out += ojson(v).dump();
    return;
  }
  out += '"';
  out += v;
  out += '"';
}

void append_mappings(std::string& out, const std::vector<Mapping>& mappings) {
  out += "[";
  bool first = true;
  for (const Mapping& m : mappings) {
    if (!first) out += ',';
    first = false;
    fmt::format_to(std::back_inserter(out),
                   R"({{"start":{},"end":{},"prot":{},"shared":{},"kind":"{}","pgoff":{},"path":)",
                   m.start, m.end, m.prot, m.shared, kMappingKindNames[static_cast<size_t>(m.kind)],
                   m.pgoff);
    append_string(out, m.path);
    fmt::format_to(std::back_inserter(out), R"(,"dev":{},"inode":{},"vmflags":)", m.dev, m.inode);
    append_string(out, m.vmflags);
    fmt::format_to(std::back_inserter(out), R"(,"pages_dumped":{})", m.pages_dumped);
    if (m.ghost) fmt::format_to(std::back_inserter(out), R"(,"ghost":{})", m.ghost);
    if (m.all_pages) out += R"(,"all_pages":true)";
    if (!m.guards.empty()) {
      out += R"(,"guards":[)";
      for (size_t i = 0; i < m.guards.size(); i++)
        fmt::format_to(std::back_inserter(out), "{}[{},{}]", i ? "," : "", m.guards[i][0],
                       m.guards[i][1]);
      out += ']';
    }
    if (m.kind == MappingKind::Aio) fmt::format_to(std::back_inserter(out), R"(,"aio_nr":{})", m.aio_nr);
    if (m.aio_head || m.aio_tail)
      fmt::format_to(std::back_inserter(out), R"(,"aio_head":{},"aio_tail":{})", m.aio_head, m.aio_tail);
    if (!m.aio_events.empty()) fmt::format_to(std::back_inserter(out), R"(,"aio_events":"{}")", to_hex(m.aio_events));
    if (m.named_shm)
      fmt::format_to(std::back_inserter(out),
                     R"(,"named_shm":{{"size":{},"mode":{},"uid":{},"gid":{}}})", m.named_shm->size,
                     m.named_shm->mode, m.named_shm->uid, m.named_shm->gid);
    if (m.saved_file)
      fmt::format_to(std::back_inserter(out), R"(,"saved_file":{{"size":{}}})", m.saved_file->size);
    if (m.hugetlb_page) fmt::format_to(std::back_inserter(out), R"(,"hugetlb_page":{})", m.hugetlb_page);
    if (!m.mempolicy.empty()) {
      out += R"(,"mempolicy":)";
      append_string(out, m.mempolicy);
    }
    out += '}';
  }
  out += "]";
}

ojson encode(const FileDesc& f) {
  ojson j;
  j["fd"] = f.fd;
  j["type"] = kFdTypeNames[static_cast<size_t>(f.type)];
  j["path"] = f.path;
  j["flags"] = f.flags;
  j["pos"] = f.pos;
  j["inode"] = f.inode;
  j["size"] = f.size;
  j["mode"] = f.mode;
  if (!f.pipe_data.empty()) j["pipe_data"] = to_hex(f.pipe_data);  // always there up to version 5
  if (f.file_id) j["file_id"] = f.file_id;
  if (const auto& u = f.unix_socket) {
    ojson q = ojson::array();
    for (const auto& m : u->queue) q.push_back(to_hex(m));
    j["unix_socket"] = {{"type", u->type}, {"state", u->state}, {"peer_inode", u->peer_inode},
                        {"name", u->name}, {"queue", q}};
    auto& ju = j["unix_socket"];
    if (u->detached_peer) ju["detached_peer"] = true;
    if (!u->pending.empty()) ju["pending"] = u->pending;
    if (u->pending_on) ju["pending_on"] = u->pending_on;
    if (u->shutdown) ju["shutdown"] = u->shutdown;
    if (u->backlog) ju["backlog"] = u->backlog;
    if (u->name_inode) ju["name_inode"] = u->name_inode;
    if (u->name_deleted) ju["name_deleted"] = true;
    if (u->name_file)
      ju["name_file"] = {{"mode", u->name_file->mode}, {"uid", u->name_file->uid},
                         {"gid", u->name_file->gid}};
    if (!u->peer_name.empty()) ju["peer_name"] = u->peer_name;
    bool passed = false;
    for (const auto& m : u->queue_fds) passed |= !m.empty();
    if (passed) {
      ojson all = ojson::array();
      for (const auto& m : u->queue_fds) {
        ojson one = ojson::array();
        for (const auto& d : m) one.push_back(encode(d));
        all.push_back(one);
      }
      ju["queue_fds"] = all;
    }
    if (!u->queue_senders.empty()) ju["queue_senders"] = u->queue_senders;
  }
  if (const auto& s = f.inet_socket) {
    j["inet_socket"] = {{"family", s->family}, {"type", s->type}, {"protocol", s->protocol},
                        {"state", s->state}, {"local", s->local}, {"local_port", s->local_port},
                        {"peer", s->peer}, {"peer_port", s->peer_port},
                        {"shutdown", s->shutdown}, {"backlog", s->backlog}};
    if (s->closed) j["inet_socket"]["closed"] = true;
    if (const auto& t = s->tcp) {
      ojson jt = {{"send_seq", t->send_seq},     {"recv_seq", t->recv_seq},
                  {"send_queue", to_hex(t->send_queue)}, {"unsent", t->unsent},
                  {"recv_queue", to_hex(t->recv_queue)}, {"mss", t->mss},
                  {"options", t->options},       {"snd_wscale", t->snd_wscale},
                  {"rcv_wscale", t->rcv_wscale}, {"timestamp", t->timestamp}};
      if (t->window) {
        ojson w = ojson::array();
        for (uint32_t v : *t->window) w.push_back(v);
        jt["window"] = w;
      }
      if (!t->network_lock.empty()) jt["network_lock"] = t->network_lock;
      if (t->peeked) jt["peeked"] = true;
      j["inet_socket"]["tcp"] = jt;
    }
  }
  if (!f.sock_options.empty()) {
    ojson os = ojson::array();
    for (const auto& o : f.sock_options)
      os.push_back({{"level", o.level}, {"name", o.name}, {"value", to_hex(o.value)}});
    j["sock_options"] = os;
  }
  if (!f.sock_filter.empty()) j["sock_filter"] = to_hex(f.sock_filter);
  if (f.type == FdType::EventFd) {
    j["eventfd_count"] = f.eventfd_count;
    if (f.eventfd_semaphore) j["eventfd_semaphore"] = true;
  }
  if (f.type == FdType::Epoll) {
    ojson ts = ojson::array();
    for (const auto& t : f.epoll_targets) {
      ts.push_back({{"fd", t.fd}, {"events", t.events}, {"data", t.data}});
      if (t.via >= 0) ts.back()["via"] = t.via;
    }
    j["epoll_targets"] = ts;
  }
  if (f.type == FdType::SignalFd) j["signalfd_mask"] = f.signalfd_mask;
  if (const auto& t = f.timerfd)
    j["timerfd"] = {{"clock_id", t->clock_id}, {"settime_flags", t->settime_flags},
                    {"ticks", t->ticks}, {"interval_ns", t->interval_ns},
                    {"value_ns", t->value_ns}};
  if (f.type == FdType::Inotify) {
    ojson ws = ojson::array();
    for (const auto& w : f.inotify_watches) {
      ws.push_back({{"wd", w.wd}, {"mask", w.mask}, {"path", w.path}, {"dev", w.dev},
                    {"inode", w.inode}});
      if (w.ghost) ws.back()["ghost"] = w.ghost;
    }
    j["inotify_watches"] = ws;
  }
  if (!f.locks.empty()) {
    ojson ls = ojson::array();
    for (const auto& l : f.locks)
      ls.push_back({{"kind", kLockKindNames[static_cast<size_t>(l.kind)]}, {"write", l.write},
                    {"start", l.start}, {"len", l.len}});
    j["locks"] = ls;
  }
  if (f.pipe_size) j["pipe_size"] = f.pipe_size;
  if (f.type == FdType::PidFd) j["pidfd_pid"] = f.pidfd_pid;
  if (const auto& o = f.owner)
    j["owner"] = {{"type", o->type}, {"pid", o->pid}, {"signum", o->signum}, {"uid", o->uid},
                  {"euid", o->euid}};
  if (f.ghost) j["ghost"] = f.ghost;
  if (f.pty) j["pty"] = {{"index", f.pty->index}, {"master", f.pty->master}};
  return j;
}

ojson encode(const Pty& t) {
  const Termios& m = t.termios;
  ojson j;
  j["index"] = t.index;
  j["termios"] = {{"iflag", m.iflag}, {"oflag", m.oflag}, {"cflag", m.cflag},
                  {"lflag", m.lflag}, {"line", m.line}, {"cc", to_hex(m.cc)},
                  {"ispeed", m.ispeed}, {"ospeed", m.ospeed}};
  j["winsize"] = t.winsize;
  if (t.locked) j["locked"] = true;
  if (t.packet) j["packet"] = true;
  if (t.session) j["session"] = t.session;
  if (t.fg_pgrp) j["fg_pgrp"] = t.fg_pgrp;
  if (!t.input.empty()) j["input"] = to_hex(t.input);
  if (!t.input_eofs.empty()) j["input_eofs"] = t.input_eofs;
  if (!t.output.empty()) j["output"] = to_hex(t.output);
  if (t.mode) j["owner"] = {t.uid, t.gid, t.mode};
  if (t.hung_up) j["hung_up"] = true;
  return j;
}


ojson encode(const GhostFile& g) {
  ojson j;
  j["id"] = g.id;
  j["kind"] = kGhostKindNames[static_cast<size_t>(g.kind)];
  j["path"] = g.path;
  j["mode"] = g.mode;
  j["uid"] = g.uid;
  j["gid"] = g.gid;
  j["size"] = g.size;
  j["atime_ns"] = g.atime_ns;
  j["mtime_ns"] = g.mtime_ns;
  j["nlink"] = g.nlink;
  j["dev"] = g.dev;
  j["inode"] = g.inode;
  if (!g.handle.empty()) {
    j["handle_type"] = g.handle_type;
    j["handle"] = to_hex(g.handle);
  }
  if (g.seals) j["seals"] = g.seals;
  if (g.data_in_pages) j["data_in_pages"] = true;
  if (g.put_back) j["put_back"] = true;
  if (g.ctime_ns) j["ctime_ns"] = g.ctime_ns;
  ojson data = ojson::array();
  for (const auto& e : g.data) data.push_back({{"offset", e.offset}, {"data", to_hex(e.data)}});
  j["data"] = data;
  return j;
}

ojson encode(const Process& p) {
  ojson j;
  j["pid"] = p.pid;
  j["ppid"] = p.ppid;
  j["pgid"] = p.pgid;
  j["sid"] = p.sid;
  if (p.zombie) {
    j["zombie"] = true;
    j["exit_status"] = p.exit_status;
  }
  j["comm"] = p.comm;
  j["exe"] = p.exe;
  j["cwd"] = p.cwd;
  if (p.cwd_ghost) j["cwd_ghost"] = p.cwd_ghost;
  if (p.exe_ghost) j["exe_ghost"] = p.exe_ghost;
  j["root"] = p.root;
  j["umask"] = p.umask;
  j["personality"] = p.personality;
  if (!p.mempolicy.empty()) j["mempolicy"] = p.mempolicy;
  j["uids"] = p.uids;
  j["gids"] = p.gids;
  if (p.groups) j["groups"] = *p.groups;
  j["rlimits"] = ojson::array();
  for (const auto& r : p.rlimits)
    j["rlimits"].push_back({{"resource", r.resource}, {"cur", r.cur}, {"max", r.max}});
  const MmLayout& mm = p.mm;
  j["mm"] = {{"start_code", mm.start_code}, {"end_code", mm.end_code},
             {"start_data", mm.start_data}, {"end_data", mm.end_data},
             {"start_brk", mm.start_brk},   {"brk", mm.brk},
             {"start_stack", mm.start_stack}, {"arg_start", mm.arg_start},
             {"arg_end", mm.arg_end},       {"env_start", mm.env_start},
             {"env_end", mm.env_end},       {"auxv", mm.auxv}};
  // "mappings" is added as text by append_process().
  j["fds"] = ojson::array();
  for (const auto& f : p.fds) j["fds"].push_back(encode(f));
  j["threads"] = ojson::array();
  for (const auto& t : p.threads) j["threads"].push_back(encode(t));
  j["sigactions"] = ojson::array();
  for (const auto& s : p.sigactions)
    j["sigactions"].push_back({{"signo", s.signo},
                               {"handler", s.handler},
                               {"flags", s.flags},
                               {"restorer", s.restorer},
                               {"mask", s.mask}});
  if (p.itimers) {
    j["itimers"] = ojson::array();
    for (const auto& t : *p.itimers)
      j["itimers"].push_back({{"interval_ns", t.interval_ns}, {"value_ns", t.value_ns}});
  }
  j["posix_timers"] = ojson::array();
  for (const auto& t : p.posix_timers)
    j["posix_timers"].push_back({{"id", t.id},
                                 {"clock_id", t.clock_id},
                                 {"signo", t.signo},
                                 {"sigev_value", t.sigev_value},
                                 {"notify", t.notify},
                                 {"interval_ns", t.value.interval_ns},
                                 {"value_ns", t.value.value_ns},
                                 {"overrun", t.overrun}});
  if (p.pdeathsig) j["pdeathsig"] = *p.pdeathsig;
  if (p.dumpable) j["dumpable"] = *p.dumpable;
  if (p.child_subreaper) j["child_subreaper"] = *p.child_subreaper;
  if (p.stop_signal) j["stop_signal"] = p.stop_signal;
  if (p.membarrier) j["membarrier"] = p.membarrier;
  if (p.loginuid) j["loginuid"] = *p.loginuid;
  if (p.oom_score_adj) j["oom_score_adj"] = *p.oom_score_adj;
  if (p.thp_disabled) j["thp_disabled"] = *p.thp_disabled;
  if (p.no_new_privs) j["no_new_privs"] = *p.no_new_privs;
  if (p.caps)
    j["caps"] = {{"inheritable", p.caps->inheritable}, {"permitted", p.caps->permitted},
                 {"effective", p.caps->effective}, {"bounding", p.caps->bounding},
                 {"ambient", p.caps->ambient}};
  return j;
}

// Appends a process as JSON text: encode(p), with its mappings as the last key.
void append_process(std::string& out, const Process& p) {
  std::string head = encode(p).dump();
  if (head.empty() || head.back() != '}') throw Error("manifest: unexpected JSON for a process");
  head.pop_back();
  out += head;
  out += head.back() == '{' ? "\"mappings\":" : ",\"mappings\":";
  append_mappings(out, p.mappings);
  out += "}";
}

// The manifest's own keys: format, files, packs, series.
ojson manifest_head(const Manifest& m) {
  ojson j;
  j["format"] = kFormatName;
  j["format_version"] = m.checkpoint.format_version;  // the writer sets kFormatVersion
  j["files"] = ojson::object();
  for (const auto& [name, e] : m.files)
    j["files"][name] = {{"size", e.size}, {"xxh3", fmt::format("{:016x}", e.xxh3)}};
  auto entry = [](const FileEntry& e) {
    return ojson{{"size", e.size}, {"xxh3", fmt::format("{:016x}", e.xxh3)}};
  };
  if (!m.packs.empty()) {
    j["packs"] = ojson::array();
    for (const auto& p : m.packs)
      j["packs"].push_back({{"name", p.name}, {"pack", entry(p.data)}, {"index", entry(p.index)}});
  }
  if (m.series)
    j["series"] = {{"new_pages", m.series->new_pages},
                   {"earlier_pages", m.series->earlier_pages},
                   {"unchanged_pages", m.series->unchanged_pages}};
  return j;
}

// The checkpoint object, compact: a job with 20,000 mappings or fds writes
// megabytes of it, and `snap info --manifest` or jq shows it indented.
std::string checkpoint_text(const Checkpoint& c) {
  ojson cj;
  cj["snap_version"] = c.snap_version;
  cj["created"] = c.created;
  cj["hostname"] = c.hostname;
  cj["kernel_release"] = c.kernel_release;
  if (c.cpu) {
    ojson layout = ojson::array();
    for (const auto& x : c.cpu->xsave_layout) layout.push_back({x.id, x.offset, x.size});
    cj["cpu"] = {{"vendor", c.cpu->vendor}, {"model", c.cpu->model},
                 {"features", c.cpu->features}, {"xcr0", c.cpu->xcr0},
                 {"xsave_layout", layout}};
  }
  if (!c.vdso.empty()) cj["vdso"] = to_hex(c.vdso);
  if (c.clocks)
    cj["clocks"] = {{"monotonic_ns", c.clocks->monotonic_ns}, {"boottime_ns", c.clocks->boottime_ns}};
  if (c.series_number) cj["series_number"] = *c.series_number;
  if (!c.changed_pages_by.empty()) cj["changed_pages_by"] = c.changed_pages_by;
  if (!c.pid_namespace.empty()) cj["pid_namespace"] = c.pid_namespace;
  if (!c.job_cpus.empty()) cj["job_cpus"] = cpu_list_text(c.job_cpus);
  if (!c.code_files.empty()) {
    ojson files = ojson::object();
    for (const auto& [path, st] : c.code_files)
      files[path] = {{"size", st.size}, {"mtime_ns", st.mtime_ns}, {"dev", st.dev},
                     {"inode", st.inode}, {"build_id", st.build_id}};
    cj["code_files"] = files;
  }
  if (!c.ghost_files.empty()) {
    ojson ghosts = ojson::array();
    for (const auto& g : c.ghost_files) ghosts.push_back(encode(g));
    cj["ghost_files"] = ghosts;
  }
  if (!c.temp_files.empty()) {
    ojson temps = ojson::array();
    for (const auto& t : c.temp_files) temps.push_back(encode(t));
    cj["temp_files"] = temps;
  }
  if (!c.ptys.empty()) {
    ojson ptys = ojson::array();
    for (const auto& t : c.ptys) ptys.push_back(encode(t));
    cj["ptys"] = ptys;
  }
  // The processes are spliced in as text (append_process()): "processes" is
  // the last key.
  cj["processes"] = ojson::array();
  std::string out = cj.dump();
  static constexpr std::string_view kTail = "\"processes\":[]}";
  if (!std::string_view(out).ends_with(kTail)) throw Error("manifest: unexpected JSON layout");
  out.resize(out.size() - kTail.size());
  size_t nmappings = 0;
  for (const auto& p : c.processes) nmappings += p.mappings.size();
  out.reserve(out.size() + c.processes.size() * 8192 + nmappings * 300);
  out += "\"processes\":[";
  for (size_t i = 0; i < c.processes.size(); ++i) {
    if (i) out += ',';
    append_process(out, c.processes[i]);
  }
  out += "]}";
  return out;
}

}  // namespace

std::string to_json(const Manifest& m) {
  std::string out = manifest_head(m).dump();  // never empty: "files" is always there
  out.pop_back();
  std::string cp = checkpoint_text(m.checkpoint);
  out.reserve(out.size() + cp.size() + 20);
  out += ",\"checkpoint\":";
  out += cp;
  out += "}\n";
  return out;
}

std::string manifest_file_json(const Manifest& m) { return manifest_head(m).dump() + "\n"; }

std::string checkpoint_json(const Checkpoint& c) { return checkpoint_text(c) + "\n"; }

std::string to_json(const Checkpoint& c) { return to_json(Manifest{c, {}, {}, std::nullopt}); }

const char* name_of(MappingKind k) { return kMappingKindNames[static_cast<size_t>(k)]; }
const char* name_of(FdType t) { return kFdTypeNames[static_cast<size_t>(t)]; }

}  // namespace snap::image
