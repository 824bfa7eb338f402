#include "tracer/tcp_repair.h"

#include <linux/filter.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <tuple>
#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "tracer/sock_options.h"
#include "tracer/sockets.h"
#include "tracer/tcp_counters.h"

namespace snap {

namespace {

constexpr int kEstablished = 1;  // TCP_ESTABLISHED

// The job sent its FIN (shutdown for writing): FIN_WAIT1, FIN_WAIT2,
// LAST_ACK, CLOSING.
bool fin_sent(int state) { return state == 4 || state == 5 || state == 9 || state == 11; }
// The peer's FIN came in: CLOSE_WAIT, LAST_ACK, CLOSING.
bool fin_received(int state) { return state == 8 || state == 9 || state == 11; }

std::string describe(const image::InetSocket& s) {
  return fmt::format("TCP connection {} -> {}", inet_address(s.local, s.local_port, s.family),
                     inet_address(s.peer, s.peer_port, s.family));
}

void set_int(int sock, int level, int name, int value, const std::string& call,
             const std::string& what) {
  if (::setsockopt(sock, level, name, &value, sizeof value) < 0)
    throw SysError(fmt::format("{} on {}", call, what), errno);
}

int get_int(int sock, int level, int name, const std::string& call, const std::string& what) {
  int v = 0;
  socklen_t len = sizeof v;
  if (::getsockopt(sock, level, name, &v, &len) < 0)
    throw SysError(fmt::format("{} on {}", call, what), errno);
  return v;
}

int ioctl_int(int sock, unsigned long request, const char* call, const std::string& what) {
  int v = 0;
  if (::ioctl(sock, request, &v) < 0) throw SysError(fmt::format("{} on {}", call, what), errno);
  return v;
}

// Selects `queue` and reads its sequence number and `len` bytes, peeked:
// one byte more is asked for, so a queue longer than said shows.
std::vector<uint8_t> read_queue(int sock, int queue, uint32_t& seq, int len,
                                const std::string& what) {
  const char* name = queue == TCP_SEND_QUEUE ? "send" : "receive";
  set_int(sock, SOL_TCP, TCP_REPAIR_QUEUE, queue, "setsockopt(TCP_REPAIR_QUEUE)", what);
  seq = static_cast<uint32_t>(get_int(sock, SOL_TCP, TCP_QUEUE_SEQ, "getsockopt(TCP_QUEUE_SEQ)", what));
  std::vector<uint8_t> data(static_cast<size_t>(len) + 1);
  ssize_t n = 0;
  if (len > 0) {
    do n = ::recv(sock, data.data(), data.size(), MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0) throw SysError(fmt::format("recv(MSG_PEEK) of the {} queue of {}", name, what), errno);
  }
  if (n != len)
    throw Error(fmt::format("{}: its {} queue holds {} bytes where the kernel counts {}; the "
                            "image would lose data",
                            what, name, n, len));
  data.resize(static_cast<size_t>(len));
  return data;
}

void read_connection(int sock, image::InetSocket& s, const std::string& what) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(sock, SOL_TCP, TCP_INFO, &info, &len) < 0)
    throw SysError("getsockopt(TCP_INFO) on " + what, errno);
  if (info.tcpi_state != s.state)
    throw Error(fmt::format("{}: {} changed from state {} to {} while the job was stopped", what,
                            describe(s), s.state, info.tcpi_state),
                "checkpoint again");
  image::TcpConnection t;
  int outq = ioctl_int(sock, SIOCOUTQ, "ioctl(SIOCOUTQ)", what);
  int unsent = ioctl_int(sock, SIOCOUTQNSD, "ioctl(SIOCOUTQNSD)", what);
  const int inq = ioctl_int(sock, SIOCINQ, "ioctl(SIOCINQ)", what);
  // A half-closed connection comes back established and is shut down
  // again: the FIN the job sent is left out of its send queue (restore
  // sends it again, a duplicate to a peer that had it), and the FIN that
  // came in stays counted in the receive sequence, with the socket shut
  // down for reading (end of file after the data).
  if (fin_sent(s.state)) {
    if (outq > 0) outq--;
    if (unsent > 0) unsent--;
    s.shutdown |= 2;
  }
  if (fin_received(s.state)) s.shutdown |= 1;
  t.recv_queue = read_queue(sock, TCP_RECV_QUEUE, t.recv_seq, inq, what);
  t.send_queue = read_queue(sock, TCP_SEND_QUEUE, t.send_seq, outq, what);
  if (fin_sent(s.state)) t.send_seq--;
  set_int(sock, SOL_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE, "setsockopt(TCP_REPAIR_QUEUE)", what);
  t.unsent = static_cast<uint32_t>(std::min(unsent, outq));
  t.mss = static_cast<uint32_t>(get_int(sock, SOL_TCP, TCP_MAXSEG, "getsockopt(TCP_MAXSEG)", what));
  t.options = info.tcpi_options;
  if (t.options & TCPI_OPT_WSCALE) {
    t.snd_wscale = info.tcpi_snd_wscale;
    t.rcv_wscale = info.tcpi_rcv_wscale;
  }
  if (t.options & TCPI_OPT_TIMESTAMPS)
    t.timestamp = static_cast<uint32_t>(
        get_int(sock, SOL_TCP, TCP_TIMESTAMP, "getsockopt(TCP_TIMESTAMP)", what));
  tcp_repair_window w{};
  len = sizeof w;
  if (::getsockopt(sock, SOL_TCP, TCP_REPAIR_WINDOW, &w, &len) == 0)
    t.window = std::array<uint32_t, 5>{w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup};
  else if (errno != ENOPROTOOPT)
    throw SysError("getsockopt(TCP_REPAIR_WINDOW) on " + what, errno);
  vlog("{}: {} saved in repair mode: {} bytes to send ({} unsent), {} to read", what, describe(s),
       t.send_queue.size(), t.unsent, t.recv_queue.size());
  s.tcp = std::move(t);
}

// Without repair mode (no CAP_NET_ADMIN), a connection between two sockets
// of the job: only what waits to be read is saved (peeked, nothing taken
// from the job), and the restore connects the two again and sends it. That
// is faithful only when nothing is in flight: every byte either end sent
// was acknowledged, or is known to be in its peer's receive queue
// (`delivered`: on loopback the data arrives at once, its acknowledgement
// may be delayed by up to 40 ms), and any FIN was acknowledged.
void peek_connection(int sock, image::InetSocket& s, bool delivered, const std::string& what) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(sock, SOL_TCP, TCP_INFO, &info, &len) < 0)
    throw SysError("getsockopt(TCP_INFO) on " + what, errno);
  const std::string hint =
      "without CAP_NET_ADMIN snap can save a connection between two processes of the job only "
      "when nothing is in flight on it: dump again in a moment (or as root); nothing was killed";
  if (info.tcpi_state != kEstablished && info.tcpi_state != 5 /* FIN_WAIT2 */ &&
      info.tcpi_state != 8 /* CLOSE_WAIT */)
    throw Error(fmt::format("{}: {} is closing (TCP state {}), its FIN not yet acknowledged", what,
                            describe(s), info.tcpi_state),
                hint);
  if (int outq = ioctl_int(sock, SIOCOUTQ, "ioctl(SIOCOUTQ)", what); outq > 0 && !delivered)
    throw Error(fmt::format("{}: {}: {} bytes the job sent have not reached its peer (whose "
                            "receive buffer is full)",
                            what, describe(s), outq),
                hint);
  if (info.tcpi_state == 5) s.shutdown |= 2;
  if (info.tcpi_state == 8) s.shutdown |= 1;
  image::TcpConnection t;
  const int inq = ioctl_int(sock, SIOCINQ, "ioctl(SIOCINQ)", what);
  t.recv_queue.resize(static_cast<size_t>(inq) + 1);
  ssize_t n = 0;
  if (inq > 0) {
    do n = ::recv(sock, t.recv_queue.data(), t.recv_queue.size(), MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0) throw SysError(fmt::format("recv(MSG_PEEK) of {}", what), errno);
  }
  if (n != inq)
    throw Error(fmt::format("{}: its receive queue holds {} bytes where the kernel counts {}; the "
                            "image would lose data",
                            what, n, inq));
  t.recv_queue.resize(static_cast<size_t>(inq));
  t.peeked = true;
  vlog("{}: {} saved without repair mode: {} bytes to read", what, describe(s), inq);
  s.tcp = std::move(t);
}

// One end of a connection saved without repair mode.
struct PeekedEnd {
  int sock;  // snap's copy
  const image::InetSocket* s;
};

// Pushes out what the kernel holds back of a socket's data until an
// acknowledgement comes (Nagle's algorithm, a cork): setting TCP_NODELAY or
// clearing TCP_CORK sends it; each is set back as it was at once. TCP is a
// byte stream: only when those bytes travel changes.
void push_held_back(int sock) {
  for (int opt : {TCP_NODELAY, TCP_CORK}) {
    int was = 0;
    socklen_t len = sizeof was;
    if (::getsockopt(sock, SOL_TCP, opt, &was, &len) < 0) continue;
    int flip = opt == TCP_NODELAY ? 1 : 0;
    if (was == flip) continue;
    ::setsockopt(sock, SOL_TCP, opt, &flip, sizeof flip);
    ::setsockopt(sock, SOL_TCP, opt, &was, sizeof was);
  }
}

// Settles the connections saved without repair mode (both ends stopped):
// data held back for an acknowledgement is pushed out, then, for at most
// 50 ms, the kernel is let deliver what is on its way. Returns, per end,
// whether every byte it was given went out and arrived, in order, in its
// peer's receive queue (or was read): then what still waits for its
// acknowledgement is in what the peer's queue shows, and once no end holds
// anything unsent, nothing more can come in. One whose peer's buffer is
// full stays false.
std::vector<bool> settle_peeked(const std::vector<PeekedEnd>& ends) {
  std::map<TcpEnds, size_t> index;
  for (size_t i = 0; i < ends.size(); i++) index[tcp_ends(*ends[i].s)] = i;
  std::vector<bool> delivered(ends.size());
  for (int round = 0; round < 50; round++) {
    std::vector<std::optional<TcpCounters>> c(ends.size());
    for (size_t i = 0; i < ends.size(); i++) c[i] = tcp_counters(ends[i].sock);
    bool all = true;
    for (size_t i = 0; i < ends.size(); i++) {
      auto p = index.find(tcp_ends(*ends[i].s, true));
      const auto* theirs = p != index.end() && c[p->second] ? &*c[p->second] : nullptr;
      // The peer counts a FIN this end sent as one byte received.
      const uint64_t fin = fin_sent(c[i] ? c[i]->state : 0) ? 1 : 0;
      delivered[i] = c[i] && theirs && c[i]->notsent == 0 &&
                     c[i]->delivered_out() + fin == theirs->received;
      all = all && delivered[i];
      if (round == 0 && c[i] && c[i]->notsent > 0) push_held_back(ends[i].sock);
    }
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return delivered;
}

}  // namespace

bool tcp_repairable_state(int state) {
  return state == kEstablished || fin_sent(state) || fin_received(state);
}

std::string unmapped_address(const std::string& addr) {
  return addr.starts_with("::ffff:") && addr.find('.') != std::string::npos ? addr.substr(7) : addr;
}

TcpEnds tcp_ends(const image::InetSocket& s, bool crossed) {
  std::string local = unmapped_address(s.local), peer = unmapped_address(s.peer);
  return crossed ? TcpEnds{peer, s.peer_port, local, s.local_port}
                 : TcpEnds{local, s.local_port, peer, s.peer_port};
}

bool tcp_peer_in_image(const std::vector<image::Process>& procs, const image::InetSocket& s) {
  const TcpEnds peer = tcp_ends(s, true);
  for (const auto& p : procs)
    for (const auto& f : p.fds) {
      const auto& o = f.inet_socket;
      if (o && o->protocol == IPPROTO_TCP && tcp_ends(*o) == peer) return true;
    }
  return false;
}

TcpRepair TcpRepair::save(std::vector<image::Process>& procs, bool outside_peers) {
  TcpRepair r;
  struct Todo {
    image::FileDesc* f;
    int sock;
    std::string what;
  };
  std::vector<Todo> todo, peek;
  std::map<uint64_t, image::FileDesc*> done;  // a socket's fds after the first share its facts
  std::vector<std::pair<image::FileDesc*, image::FileDesc*>> copies;
  // The root's stdio is snap restore's own at restore: left alone.
  const std::set<uint64_t> root_stdio = root_stdio_sockets(procs);
  // All in repair mode first, then all read: none of them sends meanwhile.
  for (auto& p : procs)
    for (auto& f : p.fds) {
      auto& s = f.inet_socket;
      if (!s || s->protocol != IPPROTO_TCP || !tcp_repairable_state(s->state) ||
          root_stdio.count(f.inode))
        continue;
      const bool inside = tcp_peer_in_image(procs, *s);
      if (!outside_peers && !inside) continue;
      if (auto d = done.find(f.inode); d != done.end()) {
        copies.emplace_back(&f, d->second);
        continue;
      }
      done[f.inode] = &f;
      const std::string what = fmt::format("pid {} fd {} (socket inode {})", p.pid, f.fd, f.inode);
      Held h;
      h.sock = copy_target_fd(p.pid, f.fd);
      h.reuseaddr = get_int(h.sock.get(), SOL_SOCKET, SO_REUSEADDR, "getsockopt(SO_REUSEADDR)", what);
      h.job_filter = f.sock_filter;
      sock_filter drop_all[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
      sock_fprog deaf{1, drop_all};
      h.deaf = ::setsockopt(h.sock.get(), SOL_SOCKET, SO_ATTACH_FILTER, &deaf, sizeof deaf) == 0;
      if (!h.deaf)  // SO_LOCK_FILTER: read as it is (a peer outside may still send)
        vlog("{}: cannot keep its packets out while it is read: {}", what, std::strerror(errno));
      const int sock = h.sock.get();
      r.held_.push_back(std::move(h));  // its filter comes off again if this fails
      int on = TCP_REPAIR_ON;
      if (::setsockopt(sock, SOL_TCP, TCP_REPAIR, &on, sizeof on) < 0) {
        int err = errno;
        if (err == EPERM && inside) {  // both ends in the job: saved without repair mode
          // Its peer is stopped too: what comes in now is what the kernel
          // still delivers of theirs (settle_peeked below), so it hears.
          r.held_.back().peeked = true;
          hear_again(r.held_.back());
          peek.push_back({&f, sock, what});
          continue;
        }
        if (err == EPERM)
          throw Error(fmt::format("pid {} fd {}: {}: saving a TCP connection needs TCP repair mode, "
                                  "which needs CAP_NET_ADMIN",
                                  p.pid, f.fd, describe(*s)),
                      "run snap dump as root (or with CAP_NET_ADMIN), or checkpoint when the job "
                      "holds no open TCP connection; nothing was killed");
        throw SysError("setsockopt(TCP_REPAIR) on " + what, err);
      }
      r.held_.back().repairing = true;
      todo.push_back({&f, sock, what});
    }
  for (auto& t : todo) read_connection(t.sock, *t.f->inet_socket, t.what);
  std::vector<PeekedEnd> ends;
  for (auto& t : peek) ends.push_back({t.sock, &*t.f->inet_socket});
  const std::vector<bool> delivered = settle_peeked(ends);
  for (size_t i = 0; i < peek.size(); i++)
    peek_connection(peek[i].sock, *peek[i].f->inet_socket, delivered[i], peek[i].what);
  for (auto& [f, first] : copies) {
    f->inet_socket->tcp = first->inet_socket->tcp;
    f->inet_socket->shutdown = first->inet_socket->shutdown;
  }
  return r;
}

TcpRepair& TcpRepair::operator=(TcpRepair&& o) noexcept {
  if (this != &o) {
    leave();
    held_ = std::exchange(o.held_, {});
  }
  return *this;
}

TcpRepair::~TcpRepair() { leave(); }

void TcpRepair::leave() {
  for (auto& h : held_) {
    // No window probe: the job's peer hears nothing of this.
    int off = TCP_REPAIR_OFF_NO_WP;
    if (h.repairing && ::setsockopt(h.sock.get(), SOL_TCP, TCP_REPAIR, &off, sizeof off) < 0)
      warn("could not take TCP socket (snap's fd {}) out of repair mode: {}", h.sock.get(),
           std::strerror(errno));
    if (h.repairing && h.reuseaddr &&
        ::setsockopt(h.sock.get(), SOL_SOCKET, SO_REUSEADDR, &h.reuseaddr, sizeof h.reuseaddr) < 0)
      warn("could not set SO_REUSEADDR back on a TCP socket: {}", std::strerror(errno));
    hear_again(h);
  }
  held_.clear();
}

void TcpRepair::hear_again(Held& h) {
  if (!h.deaf) return;
  int rc;
  if (h.job_filter.empty()) {
    int unused = 0;  // the kernel wants an int it does not read
    rc = ::setsockopt(h.sock.get(), SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof unused);
  } else {
    std::vector<sock_filter> prog(h.job_filter.size() / sizeof(sock_filter));
    std::memcpy(prog.data(), h.job_filter.data(), prog.size() * sizeof(sock_filter));
    sock_fprog fprog{static_cast<unsigned short>(prog.size()), prog.data()};
    rc = ::setsockopt(h.sock.get(), SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog);
  }
  if (rc < 0)
    warn("could not take snap's filter off a TCP socket of the job: {}", std::strerror(errno));
  h.deaf = false;
}

void TcpRepair::keep_for_kill() {
  // A connection saved without repair mode closes with a reset, not a FIN:
  // a FIN would leave its ports in TIME_WAIT for a minute, where the
  // restore binds them again.
  for (auto& h : held_) {
    linger abort{1, 0};
    if (h.peeked && ::setsockopt(h.sock.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort) < 0)
      warn("could not set SO_LINGER on a TCP socket of the job: {}", std::strerror(errno));
  }
  held_.clear();
}

}  // namespace snap
