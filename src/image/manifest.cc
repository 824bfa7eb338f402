#include "image/manifest.h"

#include <iterator>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "base/error.h"

namespace snap::image {

namespace {

using ojson = nlohmann::ordered_json;
using json = nlohmann::json;

// Names of the enums in the manifest, indexed by the enum value.
constexpr const char* kMappingKindNames[] = {"anonymous", "shared_anon", "file",
                                             "heap",      "stack",       "vdso",
                                             "vvar",      "vvar_vclock", "vsyscall",
                                             "aio"};
constexpr const char* kFdTypeNames[] = {"regular",  "directory", "pipe",    "fifo",  "socket",
                                        "tty",      "chardev",   "eventfd", "epoll", "signalfd",
                                        "timerfd",  "inotify",   "pidfd",   "other"};
constexpr const char* kLockKindNames[] = {"posix", "flock", "ofd", "lease"};

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
    if (m.kind == MappingKind::Aio) fmt::format_to(std::back_inserter(out), R"(,"aio_nr":{})", m.aio_nr);
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
  j["pipe_data"] = to_hex(f.pipe_data);
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
  }
  if (const auto& s = f.inet_socket) {
    j["inet_socket"] = {{"family", s->family}, {"type", s->type}, {"protocol", s->protocol},
                        {"state", s->state}, {"local", s->local}, {"local_port", s->local_port},
                        {"peer", s->peer}, {"peer_port", s->peer_port},
                        {"shutdown", s->shutdown}, {"backlog", s->backlog}};
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
  if (!t.output.empty()) j["output"] = to_hex(t.output);
  if (t.mode) j["owner"] = {t.uid, t.gid, t.mode};
  if (t.hung_up) j["hung_up"] = true;
  return j;
}

constexpr const char* kGhostKindNames[] = {"file", "memfd", "fifo", "directory", "proc_dir"};

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
  j["root"] = p.root;
  j["umask"] = p.umask;
  j["personality"] = p.personality;
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

// ---- decoding ----

// A JSON value together with its path from the document root, so that every
// complaint names the field it is about.
class Field {
 public:
  Field(const json& j, std::string path) : j_(j), path_(std::move(path)) {}

  [[noreturn]] void fail(std::string_view what) const {
    throw Error(fmt::format("manifest.json: {}: {}", path_.empty() ? "(top level)" : path_, what),
                "the image is damaged or was not written by snap");
  }

  Field operator[](const char* key) const {
    auto f = opt(key);
    if (!f) Field(j_, child(key)).fail("missing");
    return *f;
  }
  std::optional<Field> opt(const char* key) const {
    if (!j_.is_object()) fail("expected an object");
    auto it = j_.find(key);
    if (it == j_.end()) return std::nullopt;
    return Field(*it, child(key));
  }

  size_t size() const {
    if (!j_.is_array()) fail("expected an array");
    return j_.size();
  }
  Field at(size_t i) const { return Field(j_[i], fmt::format("{}[{}]", path_, i)); }

  template <typename T>
  T as() const {
    if constexpr (std::is_same_v<T, bool>) {
      if (!j_.is_boolean()) fail("expected true or false");
      return j_.get<bool>();
    } else if constexpr (std::is_integral_v<T>) {
      if (j_.is_number_unsigned()) {
        auto v = j_.get<uint64_t>();
        if (v > static_cast<uint64_t>(std::numeric_limits<T>::max())) fail("number out of range");
        return static_cast<T>(v);
      }
      if (j_.is_number_integer()) {
        auto v = j_.get<int64_t>();
        if constexpr (std::is_unsigned_v<T>) {
          fail("expected a non-negative integer");
        } else {
          if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max())
            fail("number out of range");
          return static_cast<T>(v);
        }
      }
      fail("expected an integer");
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!j_.is_string()) fail("expected a string");
      return j_.get<std::string>();
    } else {
      static_assert(!sizeof(T), "unsupported field type");
    }
  }

  std::vector<uint8_t> bytes() const {
    auto s = as<std::string>();
    if (s.size() % 2) fail("odd number of hex digits");
    std::vector<uint8_t> out(s.size() / 2);
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = static_cast<uint8_t>(nibble(s[2 * i]) << 4 | nibble(s[2 * i + 1]));
    return out;
  }

  template <typename T, size_t N>
  std::array<T, N> fixed_array() const {
    if (size() != N) fail(fmt::format("expected {} elements", N));
    std::array<T, N> a{};
    for (size_t i = 0; i < N; ++i) a[i] = at(i).as<T>();
    return a;
  }

  template <typename T>
  std::vector<T> list(T (*decode)(const Field&)) const {
    std::vector<T> v;
    v.reserve(size());
    for (size_t i = 0; i < size(); ++i) v.push_back(decode(at(i)));
    return v;
  }

  template <typename E, size_t N>
  E enum_of(const char* const (&names)[N]) const {
    auto s = as<std::string>();
    for (size_t i = 0; i < N; ++i)
      if (s == names[i]) return static_cast<E>(i);
    fail(fmt::format("unknown value \"{}\"", s));
  }

 private:
  std::string child(const char* key) const { return path_.empty() ? key : path_ + "." + key; }
  int nibble(char c) const {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    fail("invalid hex digit");
  }

  const json& j_;
  std::string path_;
};

std::vector<uint8_t> decode_bytes(const Field& f) { return f.bytes(); }
uint64_t decode_u64(const Field& f) { return f.as<uint64_t>(); }

ThreadState decode_thread(const Field& f) {
  ThreadState t;
  t.tid = f["tid"].as<pid_t>();
  t.gpregs = f["gpregs"].bytes();
  t.xsave = f["xsave"].bytes();
  t.sigmask = f["sigmask"].as<uint64_t>();
  t.pending = f["pending"].list(decode_bytes);
  t.pending_shared = f["pending_shared"].list(decode_bytes);
  t.in_syscall = f["in_syscall"].as<bool>();
  t.syscall_nr = f["syscall_nr"].as<int64_t>();
  if (auto s = f.opt("sigaltstack")) t.sigaltstack = s->fixed_array<uint64_t, 3>();
  if (auto c = f.opt("clear_child_tid")) t.clear_child_tid = c->as<uint64_t>();
  if (auto r = f.opt("rseq")) t.rseq = r->fixed_array<uint64_t, 3>();
  if (auto c = f.opt("comm")) t.comm = c->as<std::string>();
  if (auto r = f.opt("robust_list")) t.robust_list = r->fixed_array<uint64_t, 2>();
  return t;
}

Mapping decode_mapping(const Field& f) {
  Mapping m;
  m.start = f["start"].as<uint64_t>();
  m.end = f["end"].as<uint64_t>();
  m.prot = f["prot"].as<int>();
  m.shared = f["shared"].as<bool>();
  m.kind = f["kind"].enum_of<MappingKind>(kMappingKindNames);
  m.pgoff = f["pgoff"].as<uint64_t>();
  m.path = f["path"].as<std::string>();
  m.dev = f["dev"].as<uint64_t>();
  m.inode = f["inode"].as<uint64_t>();
  m.vmflags = f["vmflags"].as<std::string>();
  m.pages_dumped = f["pages_dumped"].as<uint64_t>();
  if (auto g = f.opt("ghost")) m.ghost = g->as<uint64_t>();
  if (auto n = f.opt("aio_nr")) m.aio_nr = n->as<uint32_t>();
  if (m.start % kPageSize || m.end % kPageSize || m.end <= m.start)
    f["end"].fail("mapping is not a non-empty page-aligned range");
  return m;
}

EpollTarget decode_epoll_target(const Field& f) {
  EpollTarget t;
  t.fd = f["fd"].as<int>();
  t.events = f["events"].as<uint32_t>();
  t.data = f["data"].as<uint64_t>();
  if (auto via = f.opt("via")) t.via = via->as<int>();
  return t;
}

InotifyWatch decode_inotify_watch(const Field& f) {
  InotifyWatch w;
  w.wd = f["wd"].as<int32_t>();
  w.mask = f["mask"].as<uint32_t>();
  w.path = f["path"].as<std::string>();
  w.dev = f["dev"].as<uint64_t>();
  w.inode = f["inode"].as<uint64_t>();
  if (auto g = f.opt("ghost")) w.ghost = g->as<uint64_t>();
  return w;
}

FileLock decode_lock(const Field& f) {
  FileLock l;
  l.kind = f["kind"].enum_of<LockKind>(kLockKindNames);
  l.write = f["write"].as<bool>();
  l.start = f["start"].as<uint64_t>();
  l.len = f["len"].as<uint64_t>();
  return l;
}

FileDesc decode_fd(const Field& f);
std::vector<FileDesc> decode_fd_list(const Field& f) { return f.list(decode_fd); }

SockOpt decode_sock_opt(const Field& o) {
  return {o["level"].as<int>(), o["name"].as<int>(), o["value"].bytes()};
}

FileDesc decode_fd(const Field& f) {
  FileDesc d;
  d.fd = f["fd"].as<int>();
  d.type = f["type"].enum_of<FdType>(kFdTypeNames);
  d.path = f["path"].as<std::string>();
  d.flags = f["flags"].as<int>();
  d.pos = f["pos"].as<uint64_t>();
  d.inode = f["inode"].as<uint64_t>();
  d.size = f["size"].as<uint64_t>();
  d.mode = f["mode"].as<uint32_t>();
  d.pipe_data = f["pipe_data"].bytes();
  if (auto id = f.opt("file_id")) d.file_id = id->as<uint64_t>();
  if (auto u = f.opt("unix_socket")) {
    UnixSocket s;
    s.type = (*u)["type"].as<int>();
    s.state = (*u)["state"].as<int>();
    s.peer_inode = (*u)["peer_inode"].as<uint64_t>();
    s.name = (*u)["name"].as<std::string>();
    s.queue = (*u)["queue"].list(decode_bytes);
    if (auto d = u->opt("detached_peer")) s.detached_peer = d->as<bool>();
    if (auto pl = u->opt("pending")) s.pending = pl->list(decode_u64);
    if (auto po = u->opt("pending_on")) s.pending_on = po->as<uint64_t>();
    if (auto v = u->opt("shutdown")) s.shutdown = v->as<int>();
    if (auto v = u->opt("backlog")) s.backlog = v->as<int>();
    if (auto v = u->opt("name_inode")) s.name_inode = v->as<uint64_t>();
    if (auto v = u->opt("name_deleted")) s.name_deleted = v->as<bool>();
    if (auto v = u->opt("peer_name")) s.peer_name = v->as<std::string>();
    if (auto v = u->opt("queue_fds")) s.queue_fds = v->list(decode_fd_list);
    d.unix_socket = std::move(s);
  }
  if (auto i = f.opt("inet_socket")) {
    InetSocket s;
    s.family = (*i)["family"].as<int>();
    s.type = (*i)["type"].as<int>();
    s.protocol = (*i)["protocol"].as<int>();
    s.state = (*i)["state"].as<int>();
    s.local = (*i)["local"].as<std::string>();
    s.local_port = (*i)["local_port"].as<uint16_t>();
    s.peer = (*i)["peer"].as<std::string>();
    s.peer_port = (*i)["peer_port"].as<uint16_t>();
    s.shutdown = (*i)["shutdown"].as<int>();
    s.backlog = (*i)["backlog"].as<int>();
    if (auto t = i->opt("tcp")) {
      TcpConnection c;
      c.send_seq = (*t)["send_seq"].as<uint32_t>();
      c.recv_seq = (*t)["recv_seq"].as<uint32_t>();
      c.send_queue = (*t)["send_queue"].bytes();
      c.unsent = (*t)["unsent"].as<uint32_t>();
      c.recv_queue = (*t)["recv_queue"].bytes();
      c.mss = (*t)["mss"].as<uint32_t>();
      c.options = (*t)["options"].as<uint32_t>();
      c.snd_wscale = (*t)["snd_wscale"].as<uint32_t>();
      c.rcv_wscale = (*t)["rcv_wscale"].as<uint32_t>();
      c.timestamp = (*t)["timestamp"].as<uint32_t>();
      if (auto w = t->opt("window")) {
        auto v = w->list(decode_u64);
        if (v.size() != 5) throw Error("manifest: inet_socket.tcp.window needs 5 numbers");
        c.window.emplace();
        for (size_t k = 0; k < 5; k++) (*c.window)[k] = static_cast<uint32_t>(v[k]);
      }
      if (c.unsent > c.send_queue.size())
        throw Error("manifest: inet_socket.tcp.unsent exceeds its send_queue");
      s.tcp = std::move(c);
    }
    d.inet_socket = std::move(s);
  }
  if (auto os = f.opt("sock_options"))
    d.sock_options = os->list(decode_sock_opt);
  if (auto b = f.opt("sock_filter")) d.sock_filter = b->bytes();
  if (auto c = f.opt("eventfd_count")) d.eventfd_count = c->as<uint64_t>();
  if (auto s = f.opt("eventfd_semaphore")) d.eventfd_semaphore = s->as<bool>();
  if (auto ts = f.opt("epoll_targets")) d.epoll_targets = ts->list(decode_epoll_target);
  if (auto m = f.opt("signalfd_mask")) d.signalfd_mask = m->as<uint64_t>();
  if (auto t = f.opt("timerfd")) {
    TimerFdState s;
    s.clock_id = (*t)["clock_id"].as<int32_t>();
    s.settime_flags = (*t)["settime_flags"].as<int32_t>();
    s.ticks = (*t)["ticks"].as<uint64_t>();
    s.interval_ns = (*t)["interval_ns"].as<int64_t>();
    s.value_ns = (*t)["value_ns"].as<int64_t>();
    d.timerfd = s;
  }
  if (auto ws = f.opt("inotify_watches")) d.inotify_watches = ws->list(decode_inotify_watch);
  if (auto ls = f.opt("locks")) d.locks = ls->list(decode_lock);
  if (auto ps = f.opt("pipe_size")) d.pipe_size = ps->as<uint32_t>();
  if (auto pp = f.opt("pidfd_pid")) d.pidfd_pid = pp->as<int32_t>();
  if (auto o = f.opt("owner")) {
    FileOwner w;
    w.type = (*o)["type"].as<int32_t>();
    w.pid = (*o)["pid"].as<int32_t>();
    w.signum = (*o)["signum"].as<int32_t>();
    w.uid = (*o)["uid"].as<uint32_t>();
    w.euid = (*o)["euid"].as<uint32_t>();
    d.owner = w;
  }
  if (auto g = f.opt("ghost")) d.ghost = g->as<uint64_t>();
  if (auto t = f.opt("pty")) d.pty = PtyEnd{(*t)["index"].as<uint32_t>(), (*t)["master"].as<bool>()};
  return d;
}

Pty decode_pty(const Field& f) {
  Pty t;
  t.index = f["index"].as<uint32_t>();
  Field m = f["termios"];
  t.termios.iflag = m["iflag"].as<uint32_t>();
  t.termios.oflag = m["oflag"].as<uint32_t>();
  t.termios.cflag = m["cflag"].as<uint32_t>();
  t.termios.lflag = m["lflag"].as<uint32_t>();
  t.termios.line = m["line"].as<uint8_t>();
  t.termios.cc = m["cc"].bytes();
  t.termios.ispeed = m["ispeed"].as<uint32_t>();
  t.termios.ospeed = m["ospeed"].as<uint32_t>();
  t.winsize = f["winsize"].fixed_array<uint16_t, 4>();
  if (auto v = f.opt("locked")) t.locked = v->as<bool>();
  if (auto v = f.opt("packet")) t.packet = v->as<bool>();
  if (auto v = f.opt("session")) t.session = v->as<int32_t>();
  if (auto v = f.opt("fg_pgrp")) t.fg_pgrp = v->as<int32_t>();
  if (auto v = f.opt("input")) t.input = v->bytes();
  if (auto v = f.opt("output")) t.output = v->bytes();
  if (auto v = f.opt("owner")) {
    auto o = v->fixed_array<uint32_t, 3>();
    t.uid = o[0];
    t.gid = o[1];
    t.mode = o[2];
  }
  if (auto v = f.opt("hung_up")) t.hung_up = v->as<bool>();
  return t;
}

GhostExtent decode_ghost_extent(const Field& f) {
  return {f["offset"].as<uint64_t>(), f["data"].bytes()};
}

GhostFile decode_ghost(const Field& f) {
  GhostFile g;
  g.id = f["id"].as<uint64_t>();
  g.kind = f["kind"].enum_of<GhostFile::Kind>(kGhostKindNames);
  g.path = f["path"].as<std::string>();
  g.mode = f["mode"].as<uint32_t>();
  g.uid = f["uid"].as<uint32_t>();
  g.gid = f["gid"].as<uint32_t>();
  g.size = f["size"].as<uint64_t>();
  g.atime_ns = f["atime_ns"].as<int64_t>();
  g.mtime_ns = f["mtime_ns"].as<int64_t>();
  g.nlink = f["nlink"].as<uint64_t>();
  g.dev = f["dev"].as<uint64_t>();
  g.inode = f["inode"].as<uint64_t>();
  if (auto h = f.opt("handle")) {
    g.handle = h->bytes();
    g.handle_type = f["handle_type"].as<int32_t>();
  }
  if (auto s = f.opt("seals")) g.seals = s->as<uint32_t>();
  g.data = f["data"].list(decode_ghost_extent);
  if (g.id == 0) f["id"].fail("a ghost file's id must not be 0");
  return g;
}

Rlimit decode_rlimit(const Field& f) {
  return {f["resource"].as<int>(), f["cur"].as<uint64_t>(), f["max"].as<uint64_t>()};
}

SigAction decode_sigaction(const Field& f) {
  return {f["signo"].as<int>(), f["handler"].as<uint64_t>(), f["flags"].as<uint64_t>(),
          f["restorer"].as<uint64_t>(), f["mask"].as<uint64_t>()};
}

TimerValue decode_timer_value(const Field& f) {
  return {f["interval_ns"].as<int64_t>(), f["value_ns"].as<int64_t>()};
}

PosixTimer decode_posix_timer(const Field& f) {
  PosixTimer t;
  t.id = f["id"].as<int32_t>();
  t.clock_id = f["clock_id"].as<int32_t>();
  t.signo = f["signo"].as<int32_t>();
  t.sigev_value = f["sigev_value"].as<uint64_t>();
  t.notify = f["notify"].as<std::string>();
  t.value = decode_timer_value(f);
  t.overrun = f["overrun"].as<int32_t>();
  return t;
}

MmLayout decode_mm(const Field& f) {
  MmLayout mm;
  mm.start_code = f["start_code"].as<uint64_t>();
  mm.end_code = f["end_code"].as<uint64_t>();
  mm.start_data = f["start_data"].as<uint64_t>();
  mm.end_data = f["end_data"].as<uint64_t>();
  mm.start_brk = f["start_brk"].as<uint64_t>();
  mm.brk = f["brk"].as<uint64_t>();
  mm.start_stack = f["start_stack"].as<uint64_t>();
  mm.arg_start = f["arg_start"].as<uint64_t>();
  mm.arg_end = f["arg_end"].as<uint64_t>();
  mm.env_start = f["env_start"].as<uint64_t>();
  mm.env_end = f["env_end"].as<uint64_t>();
  mm.auxv = f["auxv"].list(decode_u64);
  return mm;
}

Process decode_process(const Field& f) {
  Process p;
  p.pid = f["pid"].as<pid_t>();
  p.ppid = f["ppid"].as<pid_t>();
  p.pgid = f["pgid"].as<pid_t>();
  p.sid = f["sid"].as<pid_t>();
  if (auto z = f.opt("zombie")) p.zombie = z->as<bool>();
  if (auto e = f.opt("exit_status")) p.exit_status = e->as<int32_t>();
  p.comm = f["comm"].as<std::string>();
  p.exe = f["exe"].as<std::string>();
  p.cwd = f["cwd"].as<std::string>();
  if (auto g = f.opt("cwd_ghost")) p.cwd_ghost = g->as<uint64_t>();
  p.root = f["root"].as<std::string>();
  p.umask = f["umask"].as<uint32_t>();
  p.personality = f["personality"].as<uint32_t>();
  p.uids = f["uids"].fixed_array<uint32_t, 4>();
  p.gids = f["gids"].fixed_array<uint32_t, 4>();
  if (auto g = f.opt("groups")) {
    std::vector<uint32_t> v;
    for (size_t i = 0; i < g->size(); ++i) v.push_back(g->at(i).as<uint32_t>());
    p.groups = std::move(v);
  }
  p.rlimits = f["rlimits"].list(decode_rlimit);
  p.mm = decode_mm(f["mm"]);
  p.mappings = f["mappings"].list(decode_mapping);
  p.fds = f["fds"].list(decode_fd);
  p.threads = f["threads"].list(decode_thread);
  p.sigactions = f["sigactions"].list(decode_sigaction);
  // Added with the parasite; optional so that older images still read.
  if (auto it = f.opt("itimers")) {
    auto v = it->list(decode_timer_value);
    if (v.size() != 3) it->fail("expected 3 elements");
    p.itimers = std::array<TimerValue, 3>{v[0], v[1], v[2]};
  }
  if (auto pt = f.opt("posix_timers")) p.posix_timers = pt->list(decode_posix_timer);
  if (auto d = f.opt("pdeathsig")) p.pdeathsig = d->as<int32_t>();
  if (auto d = f.opt("dumpable")) p.dumpable = d->as<int32_t>();
  if (auto d = f.opt("child_subreaper")) p.child_subreaper = d->as<int32_t>();
  if (auto d = f.opt("stop_signal")) p.stop_signal = d->as<int32_t>();
  if (auto d = f.opt("membarrier")) p.membarrier = d->as<uint32_t>();
  if (auto d = f.opt("loginuid")) p.loginuid = d->as<uint32_t>();
  if (auto d = f.opt("oom_score_adj")) p.oom_score_adj = d->as<int32_t>();
  if (auto d = f.opt("thp_disabled")) p.thp_disabled = d->as<bool>();
  if (auto d = f.opt("no_new_privs")) p.no_new_privs = d->as<bool>();
  return p;
}

}  // namespace

std::string to_json(const Manifest& m) {
  const Checkpoint& c = m.checkpoint;
  ojson j;
  j["format"] = kFormatName;
  j["format_version"] = kFormatVersion;
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
  ojson& cj = j["checkpoint"];
  cj["snap_version"] = c.snap_version;
  cj["created"] = c.created;
  cj["hostname"] = c.hostname;
  cj["kernel_release"] = c.kernel_release;
  if (c.series_number) cj["series_number"] = *c.series_number;
  if (!c.changed_pages_by.empty()) cj["changed_pages_by"] = c.changed_pages_by;
  if (!c.pid_namespace.empty()) cj["pid_namespace"] = c.pid_namespace;
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
  if (!c.ptys.empty()) {
    ojson ptys = ojson::array();
    for (const auto& t : c.ptys) ptys.push_back(encode(t));
    cj["ptys"] = ptys;
  }
  // The processes are spliced in as text (append_process()): "processes" is
  // the last key of "checkpoint", itself the last key of the document.
  cj["processes"] = ojson::array();
  // Compact: a job with 20,000 mappings or fds writes megabytes of it, and
  // `snap info --json` or jq shows it indented.
  std::string out = j.dump();
  static constexpr std::string_view kTail = "\"processes\":[]}}";
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
  out += "]}}\n";
  return out;
}

std::string to_json(const Checkpoint& c) { return to_json(Manifest{c, {}, {}, std::nullopt}); }

Manifest manifest_from_json(std::string_view text) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(fmt::format("manifest.json: not valid JSON (truncated or damaged?): {}", e.what()),
                "the image is damaged or incomplete");
  }
  Field root(doc, "");
  if (root["format"].as<std::string>() != kFormatName)
    root["format"].fail(fmt::format("expected \"{}\"", kFormatName));
  auto version = root["format_version"].as<uint32_t>();
  if (version < kOldestFormatVersion || version > kFormatVersion)
    throw Error(fmt::format("image format version {} is not supported: this snap ({}) reads "
                            "versions {} to {}",
                            version, SNAP_VERSION, kOldestFormatVersion, kFormatVersion),
                "use the snap release that wrote the image");

  Manifest m;
  auto file_entry = [](const Field& e) {
    auto hex = e["xxh3"].as<std::string>();
    if (hex.size() != 16 || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
      e["xxh3"].fail("expected 16 lowercase hex digits");
    return FileEntry{e["size"].as<uint64_t>(), std::stoull(hex, nullptr, 16)};
  };
  Field files = root["files"];
  if (!doc["files"].is_object()) files.fail("expected an object");
  for (const auto& [name, _] : doc["files"].items()) m.files[name] = file_entry(files[name.c_str()]);
  // Version 3: series checkpoints.
  if (auto packs = root.opt("packs")) {
    for (size_t i = 0; i < packs->size(); ++i) {
      Field p = packs->at(i);
      PackEntry e{p["name"].as<std::string>(), file_entry(p["pack"]), file_entry(p["index"])};
      if (e.name.empty() || e.name.find_first_not_of("0123456789") != std::string::npos)
        p["name"].fail("expected a pack number");
      m.packs.push_back(std::move(e));
    }
    if (m.packs.empty()) packs->fail("expected at least one pack");
  }
  if (auto s = root.opt("series"))
    m.series = SeriesFacts{(*s)["new_pages"].as<uint64_t>(), (*s)["earlier_pages"].as<uint64_t>(),
                           (*s)["unchanged_pages"].as<uint64_t>()};

  Field c = root["checkpoint"];
  Checkpoint& cp = m.checkpoint;
  cp.format_version = version;
  cp.snap_version = c["snap_version"].as<std::string>();
  cp.created = c["created"].as<std::string>();
  cp.hostname = c["hostname"].as<std::string>();
  cp.kernel_release = c["kernel_release"].as<std::string>();
  if (auto n = c.opt("series_number")) cp.series_number = n->as<uint64_t>();
  if (auto b = c.opt("changed_pages_by")) cp.changed_pages_by = b->as<std::string>();
  if (auto n = c.opt("pid_namespace")) cp.pid_namespace = n->as<std::string>();
  if (auto cf = c.opt("code_files")) {
    if (!doc["checkpoint"]["code_files"].is_object()) cf->fail("expected an object");
    for (const auto& [path, _] : doc["checkpoint"]["code_files"].items()) {
      Field e = (*cf)[path.c_str()];
      cp.code_files[path] = {e["size"].as<uint64_t>(), e["mtime_ns"].as<int64_t>(),
                             e["dev"].as<uint64_t>(), e["inode"].as<uint64_t>(),
                             e["build_id"].as<std::string>()};
    }
  }
  if (auto g = c.opt("ghost_files")) cp.ghost_files = g->list(decode_ghost);
  if (auto t = c.opt("ptys")) cp.ptys = t->list(decode_pty);
  cp.processes = c["processes"].list(decode_process);
  return m;
}

Checkpoint checkpoint_from_json(std::string_view text) {
  return manifest_from_json(text).checkpoint;
}

const char* name_of(MappingKind k) { return kMappingKindNames[static_cast<size_t>(k)]; }
const char* name_of(FdType t) { return kFdTypeNames[static_cast<size_t>(t)]; }

}  // namespace snap::image
