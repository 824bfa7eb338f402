// Reading manifest.json (FORMAT.md) back into a Manifest, checking every
// field on the way: a damaged or foreign manifest is refused naming the
// field. Parsed with simdjson: a manifest holds a record per mapping and per
// fd, and restore reads it before anything else.
#include <array>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>

#include <fmt/core.h>
#include <simdjson.h>

#include "base/cpus.h"
#include "base/error.h"
#include "image/manifest.h"
#include "image/format.h"
#include "image/manifest_names.h"

namespace snap::image {

namespace {

// A JSON value together with the way to it from the document root, so that
// every complaint names the field it is about. The path is spelled out only
// for a complaint (a manifest has a field per fd and mapping: building each
// one's path as a string was most of the decoding's time); a Field refers to
// its parent, so it lives no longer than the Field it came from, and to the
// parser's document, which outlives them all.
// Makes the value `make` returns right where emplace_back puts it, instead
// of moving it there (a FileDesc is most of a kilobyte; a job may have
// thousands).
template <typename Make>
struct InPlace {
  Make make;
  operator decltype(make())() { return make(); }
};
template <typename Make>
InPlace(Make) -> InPlace<Make>;

class Field {
 public:
  // The root of the document in file `doc` (named in complaints).
  Field(simdjson::dom::element e, const char* doc) : e_(e), doc_(doc) {}

  [[noreturn]] void fail(std::string_view what) const {
    std::string path = this->path();
    const Field* root = this;
    while (root->parent_) root = root->parent_;
    throw Error(fmt::format("{}: {}: {}", root->doc_, path.empty() ? "(top level)" : path, what),
                "the image is damaged or was not written by snap");
  }

  Field operator[](const char* key) const {
    auto f = opt(key);
    if (!f) Field(e_, this, key, 0).fail("missing");
    return *f;
  }
  std::optional<Field> opt(const char* key) const {
    simdjson::dom::object o;
    if (e_.get_object().get(o)) fail("expected an object");
    simdjson::dom::element v;
    if (o.at_key(key).get(v)) return std::nullopt;
    return Field(v, this, key, 0);
  }
  // Calls fn(key, value) for each member of an object, in order.
  template <typename Fn>
  void for_each_member(Fn&& fn) const {
    simdjson::dom::object o;
    if (e_.get_object().get(o)) fail("expected an object");
    for (auto it = o.begin(); it != o.end(); ++it)
      fn(std::string(it.key()), Field(it.value(), this, it.key_c_str(), 0));
  }

  size_t size() const { return array().size(); }

  template <typename T>
  T as() const {
    if constexpr (std::is_same_v<T, bool>) {
      bool b = false;
      if (e_.get_bool().get(b)) fail("expected true or false");
      return b;
    } else if constexpr (std::is_integral_v<T>) {
      uint64_t u = 0;
      if (!e_.get_uint64().get(u)) {
        if (u > static_cast<uint64_t>(std::numeric_limits<T>::max())) fail("number out of range");
        return static_cast<T>(u);
      }
      int64_t v = 0;
      if (!e_.get_int64().get(v)) {
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
      return std::string(string_view());
    } else {
      static_assert(!sizeof(T), "unsupported field type");
    }
  }

  std::vector<uint8_t> bytes() const {
    std::string_view s = string_view();
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
    size_t i = 0;
    for (simdjson::dom::element e : array()) a[i] = Field(e, this, nullptr, i).as<T>(), i++;
    return a;
  }

  template <typename T>
  std::vector<T> list(T (*decode)(const Field&)) const {
    simdjson::dom::array a = array();
    std::vector<T> v;
    v.reserve(a.size());
    size_t i = 0;
    for (simdjson::dom::element e : a)
      v.emplace_back(InPlace{[&] { return decode(Field(e, this, nullptr, i++)); }});
    return v;
  }

  template <typename E, size_t N>
  E enum_of(const char* const (&names)[N]) const {
    std::string_view s = string_view();
    for (size_t i = 0; i < N; ++i)
      if (s == names[i]) return static_cast<E>(i);
    fail(fmt::format("unknown value \"{}\"", s));
  }

 private:
  Field(simdjson::dom::element e, const Field* parent, const char* key, size_t index)
      : e_(e), parent_(parent), key_(key), index_(index) {}
  std::string path() const {
    if (!parent_) return "";
    std::string up = parent_->path();
    if (!key_) return fmt::format("{}[{}]", up, index_);
    return up.empty() ? key_ : up + "." + key_;
  }
  simdjson::dom::array array() const {
    simdjson::dom::array a;
    if (e_.get_array().get(a)) fail("expected an array");
    return a;
  }
  std::string_view string_view() const {
    std::string_view s;
    if (e_.get_string().get(s)) fail("expected a string");
    return s;
  }
  int nibble(char c) const {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    fail("invalid hex digit");
  }

  simdjson::dom::element e_;
  const Field* parent_ = nullptr;
  const char* doc_ = nullptr;  // the root's file name
  const char* key_ = nullptr;  // nullptr: element index_ of an array
  size_t index_ = 0;
};

std::vector<uint8_t> decode_bytes(const Field& f) { return f.bytes(); }

// "0-3,8" (base/cpus.h).
std::vector<uint32_t> cpu_list(const Field& f, const char* what) {
  auto cpus = parse_cpu_list(f.as<std::string>());
  if (!cpus) f.fail(fmt::format("{} is not a CPU list", what));
  return *cpus;
}
uint64_t decode_u64(const Field& f) { return f.as<uint64_t>(); }
std::string decode_string(const Field& f) { return f.as<std::string>(); }

SeccompFilter decode_seccomp_filter(const Field& f) {
  SeccompFilter filter;
  filter.program = f["program"].bytes();
  // struct sock_filter: 8 bytes; BPF_MAXINSNS (4096) a filter.
  if (filter.program.empty() || filter.program.size() % 8 != 0 || filter.program.size() > 4096 * 8)
    f["program"].fail("not 1 to 4096 instructions of 8 bytes");
  if (auto flags = f.opt("flags")) filter.flags = flags->as<uint64_t>();
  return filter;
}

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
  if (auto s = f.opt("sched")) {
    Scheduling sc;
    sc.policy = (*s)["policy"].as<uint32_t>();
    if (auto r = s->opt("reset_on_fork")) sc.reset_on_fork = r->as<bool>();
    sc.nice = (*s)["nice"].as<int32_t>();
    sc.priority = (*s)["priority"].as<uint32_t>();
    if (auto r = s->opt("runtime")) sc.runtime = r->as<uint64_t>();
    if (auto r = s->opt("deadline")) sc.deadline = r->as<uint64_t>();
    if (auto r = s->opt("period")) sc.period = r->as<uint64_t>();
    if (auto r = s->opt("ioprio")) sc.ioprio = r->as<uint32_t>();
    t.sched = sc;
  }
  if (auto c = f.opt("cpus")) t.cpus = cpu_list(*c, "cpus");
  if (auto m = f.opt("mempolicy")) t.mempolicy = m->as<std::string>();
  if (auto s = f.opt("seccomp")) {
    Seccomp sc;
    if (auto r = s->opt("strict")) sc.strict = r->as<bool>();
    sc.filters = (*s)["filters"].list(decode_seccomp_filter);
    t.seccomp = sc;
  }
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
  if (auto a = f.opt("all_pages")) m.all_pages = a->as<bool>();
  if (auto g = f.opt("guards"))
    m.guards = g->list(+[](const Field& r) { return r.fixed_array<uint64_t, 2>(); });
  if (auto n = f.opt("aio_nr")) m.aio_nr = n->as<uint32_t>();
  if (auto n = f.opt("aio_head")) m.aio_head = n->as<uint32_t>();
  if (auto n = f.opt("aio_tail")) m.aio_tail = n->as<uint32_t>();
  if (auto e = f.opt("aio_events")) m.aio_events = e->bytes();
  if (auto p = f.opt("mempolicy")) m.mempolicy = p->as<std::string>();
  if (auto h = f.opt("hugetlb_page")) {
    m.hugetlb_page = h->as<uint64_t>();
    if (m.hugetlb_page < 4096 || (m.hugetlb_page & (m.hugetlb_page - 1)) ||
        (m.start | m.end) % m.hugetlb_page)
      f["hugetlb_page"].fail("a huge page size is a power of two the mapping is aligned to");
  }
  if (m.kind == MappingKind::Aio &&
      (m.aio_head >= std::max(m.aio_nr, 1u) || m.aio_tail >= std::max(m.aio_nr, 1u) ||
       m.aio_events.size() != uint64_t{(m.aio_tail + m.aio_nr - m.aio_head) % std::max(m.aio_nr, 1u)} * 32))
    f["aio_nr"].fail("AIO ring positions and events do not agree with its size");
  if (auto n = f.opt("named_shm"))
    m.named_shm = Mapping::NamedShm{(*n)["size"].as<uint64_t>(), (*n)["mode"].as<uint32_t>(),
                                    (*n)["uid"].as<uint32_t>(), (*n)["gid"].as<uint32_t>()};
  if (auto n = f.opt("saved_file")) {
    m.saved_file = Mapping::SavedFile{(*n)["size"].as<uint64_t>()};
    if (m.kind != MappingKind::File || !m.shared || m.named_shm)
      (*n)["size"].fail("a saved file is a shared mapping of a file that is not a named_shm");
  }
  if (m.start % kPageSize || m.end % kPageSize || m.end <= m.start)
    f["end"].fail("mapping is not a non-empty page-aligned range");
  for (const auto& [start, end] : m.guards)
    if (start % kPageSize || end % kPageSize || start >= end || start < m.start || end > m.end)
      f["guards"].fail("guard region is not a non-empty page-aligned range of its mapping");
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
  if (auto b = f.opt("pipe_data")) d.pipe_data = b->bytes();
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
    if (auto v = u->opt("name_file"))
      s.name_file = UnixSocket::NameFile{(*v)["mode"].as<uint32_t>(), (*v)["uid"].as<uint32_t>(),
                                         (*v)["gid"].as<uint32_t>()};
    if (auto v = u->opt("peer_name")) s.peer_name = v->as<std::string>();
    if (auto v = u->opt("queue_fds")) s.queue_fds = v->list(decode_fd_list);
    if (auto v = u->opt("queue_senders"))
      s.queue_senders = v->list(decode_string);
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
    if (auto c = i->opt("closed")) s.closed = c->as<bool>();
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
      if (auto l = t->opt("network_lock")) c.network_lock = l->as<std::string>();
      if (auto k = t->opt("peeked")) c.peeked = k->as<bool>();
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
  if (auto v = f.opt("input_eofs")) t.input_eofs = v->list(decode_u64);
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
  if (auto d = f.opt("data_in_pages")) g.data_in_pages = d->as<bool>();
  if (auto b = f.opt("put_back")) g.put_back = b->as<bool>();
  if (auto c = f.opt("ctime_ns")) g.ctime_ns = c->as<int64_t>();
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
  if (auto g = f.opt("exe_ghost")) p.exe_ghost = g->as<uint64_t>();
  p.root = f["root"].as<std::string>();
  p.umask = f["umask"].as<uint32_t>();
  p.personality = f["personality"].as<uint32_t>();
  if (auto m = f.opt("mempolicy")) p.mempolicy = m->as<std::string>();
  p.uids = f["uids"].fixed_array<uint32_t, 4>();
  p.gids = f["gids"].fixed_array<uint32_t, 4>();
  if (auto g = f.opt("groups")) {
    p.groups = g->list(+[](const Field& e) { return e.as<uint32_t>(); });
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
  if (auto c = f.opt("caps"))
    p.caps = Capabilities{(*c)["inheritable"].as<uint64_t>(), (*c)["permitted"].as<uint64_t>(),
                          (*c)["effective"].as<uint64_t>(), (*c)["bounding"].as<uint64_t>(),
                          (*c)["ambient"].as<uint64_t>()};
  return p;
}

FileEntry file_entry(const Field& e) {
  auto hex = e["xxh3"].as<std::string>();
  if (hex.size() != 16 || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
    e["xxh3"].fail("expected 16 lowercase hex digits");
  return FileEntry{e["size"].as<uint64_t>(), std::stoull(hex, nullptr, 16)};
}

}  // namespace

namespace {

simdjson::dom::element parse(simdjson::dom::parser& parser, std::string_view text,
                             const char* doc) {
  simdjson::dom::element e;
  if (auto err = parser.parse(text.data(), text.size()).get(e))
    throw Error(fmt::format("{}: not valid JSON (truncated or damaged?): {}", doc,
                            simdjson::error_message(err)),
                "the image is damaged or incomplete");
  return e;
}


XsaveComponent decode_xsave_component(const Field& f) {
  auto a = f.fixed_array<uint32_t, 3>();
  return {a[0], a[1], a[2]};
}

CpuInfo decode_cpu(const Field& f) {
  return {f["vendor"].as<std::string>(), f["model"].as<std::string>(),
          f["features"].list(decode_string), f["xcr0"].as<uint64_t>(),
          f["xsave_layout"].list(decode_xsave_component)};
}

void decode_checkpoint(const Field& c, Checkpoint& cp) {
  cp.snap_version = c["snap_version"].as<std::string>();
  cp.created = c["created"].as<std::string>();
  cp.hostname = c["hostname"].as<std::string>();
  cp.kernel_release = c["kernel_release"].as<std::string>();
  if (auto j = c.opt("cpu")) cp.cpu = decode_cpu(*j);
  if (auto j = c.opt("vdso")) cp.vdso = j->bytes();
  if (auto j = c.opt("clocks"))
    cp.clocks = JobClocks{(*j)["monotonic_ns"].as<int64_t>(), (*j)["boottime_ns"].as<int64_t>()};
  if (auto n = c.opt("series_number")) cp.series_number = n->as<uint64_t>();
  if (auto b = c.opt("changed_pages_by")) cp.changed_pages_by = b->as<std::string>();
  if (auto n = c.opt("pid_namespace")) cp.pid_namespace = n->as<std::string>();
  if (auto j = c.opt("job_cpus")) cp.job_cpus = cpu_list(*j, "job_cpus");
  if (auto cf = c.opt("code_files")) {
    cf->for_each_member([&](std::string path, const Field& e) {
      cp.code_files[std::move(path)] = {e["size"].as<uint64_t>(), e["mtime_ns"].as<int64_t>(),
                                        e["dev"].as<uint64_t>(), e["inode"].as<uint64_t>(),
                                        e["build_id"].as<std::string>()};
    });
  }
  if (auto g = c.opt("ghost_files")) cp.ghost_files = g->list(decode_ghost);
  if (auto t = c.opt("temp_files")) cp.temp_files = t->list(decode_ghost);
  if (auto t = c.opt("ptys")) cp.ptys = t->list(decode_pty);
  cp.processes = c["processes"].list(decode_process);
}

}  // namespace

Manifest manifest_from_json(std::string_view text) {
  simdjson::dom::parser parser;
  Field root(parse(parser, text, disk::kManifestFile), disk::kManifestFile);
  if (root["format"].as<std::string>() != kFormatName)
    root["format"].fail(fmt::format("expected \"{}\"", kFormatName));
  auto version = root["format_version"].as<uint32_t>();
  if (version < kOldestFormatVersion || version > kFormatVersion)
    throw Error(fmt::format("image format version {} is not supported: this snap ({}) reads "
                            "versions {} to {}",
                            version, SNAP_VERSION, kOldestFormatVersion, kFormatVersion),
                "use the snap release that wrote the image");

  Manifest m;
  root["files"].for_each_member(
      [&](std::string name, const Field& e) { m.files[std::move(name)] = file_entry(e); });
  // Version 3: series checkpoints.
  if (auto packs = root.opt("packs")) {
    m.packs = packs->list(+[](const Field& p) {
      PackEntry e{p["name"].as<std::string>(), file_entry(p["pack"]), file_entry(p["index"])};
      if (e.name.empty() || e.name.find_first_not_of("0123456789") != std::string::npos)
        p["name"].fail("expected a pack number");
      return e;
    });
    if (m.packs.empty()) packs->fail("expected at least one pack");
  }
  if (auto s = root.opt("series"))
    m.series = SeriesFacts{(*s)["new_pages"].as<uint64_t>(), (*s)["earlier_pages"].as<uint64_t>(),
                           (*s)["unchanged_pages"].as<uint64_t>()};

  m.checkpoint.format_version = version;
  // Up to version 5 the checkpoint is in the manifest; from version 6 in a
  // file of its own, which the manifest lists.
  if (auto c = root.opt("checkpoint"))
    decode_checkpoint(*c, m.checkpoint);
  else if (version < 6 || !m.files.count(disk::kCheckpointFile))
    root["checkpoint"].fail(fmt::format("missing, and no {} is listed", disk::kCheckpointFile));
  else
    m.checkpoint_in_file = true;
  return m;
}

Checkpoint checkpoint_from_json(std::string_view text) {
  return manifest_from_json(text).checkpoint;
}

Checkpoint checkpoint_file_from_json(std::string_view text, uint32_t format_version) {
  simdjson::dom::parser parser;
  Checkpoint cp;
  cp.format_version = format_version;
  decode_checkpoint(Field(parse(parser, text, disk::kCheckpointFile), disk::kCheckpointFile), cp);
  return cp;
}

}  // namespace snap::image
