#include "restore/tcp_connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <tuple>
#include <utility>

#include <algorithm>
#include <cstring>
#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "restore/sockets.h"

namespace snap::restore {

namespace {

constexpr int kSoBufLock = 72;  // SO_BUF_LOCK, Linux 5.14

void set(int sock, int level, int name, const void* value, socklen_t len, const std::string& call,
         const std::string& what) {
  if (::setsockopt(sock, level, name, value, len) < 0)
    throw SysError(fmt::format("cannot restore {}: {}", what, call), errno);
}

void set_int(int sock, int level, int name, int value, const std::string& call,
             const std::string& what) {
  set(sock, level, name, &value, sizeof value, call, what);
}

// The buffer size (as getsockopt shows it) that holds `bytes` queued: the
// kernel doubles what it is given and counts its overhead in it too.
size_t room_for(size_t bytes) { return bytes * 2 + (64 << 10); }

// Room for `bytes` more in a socket buffer: it is grown (SO_*BUFFORCE).
// One the job left to the kernel's tuning gets its lock taken off again
// (SO_BUF_LOCK), so that the kernel goes on tuning it; one the job set is
// set to its size again once the queue is in (settle_buffers).
void make_room(int sock, int name, int force, size_t bytes, const std::string& what) {
  if (bytes == 0) return;
  int now = 0;
  socklen_t len = sizeof now;
  if (::getsockopt(sock, SOL_SOCKET, name, &now, &len) < 0)
    throw SysError(fmt::format("cannot restore {}: getsockopt(level 1, option {})", what, name), errno);
  const size_t want = room_for(bytes);
  if (static_cast<size_t>(now) >= want) return;
  int locks = 0;
  len = sizeof locks;
  const bool can_unlock = ::getsockopt(sock, SOL_SOCKET, kSoBufLock, &locks, &len) == 0;
  set_int(sock, SOL_SOCKET, force, static_cast<int>(std::min<size_t>(want, 1u << 30)),
          fmt::format("setsockopt(SOL_SOCKET, {}) for {} queued bytes", force, bytes), what);
  if (can_unlock) set_int(sock, SOL_SOCKET, kSoBufLock, locks, "setsockopt(SO_BUF_LOCK)", what);
}

// Sends `data` into the queue selected (repair mode) or to the peer.
void send_all(int sock, const uint8_t* data, size_t len, const char* queue, const std::string& what) {
  size_t off = 0, chunk = len;
  while (off < len) {
    ssize_t n = ::send(sock, data + off, std::min(chunk, len - off), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 && (errno == ENOMEM || errno == EAGAIN) && chunk > 4096) {
      chunk /= 2;  // a repair-mode receive queue takes one linear buffer per call
      continue;
    }
    if (n <= 0)
      throw SysError(fmt::format("cannot restore {}: put back byte {} of {} of its {} queue", what,
                                 off, len, queue),
                     n < 0 ? errno : EAGAIN);
    off += static_cast<size_t>(n);
  }
}

void select_queue(int sock, int queue, const std::string& what) {
  set_int(sock, SOL_TCP, TCP_REPAIR_QUEUE, queue, "setsockopt(TCP_REPAIR_QUEUE)", what);
}

}  // namespace

ScopedFd make_tcp_connection(const image::FileDesc& f, const std::string& what) {
  const auto& s = *f.inet_socket;
  const auto& t = *s.tcp;
  ScopedFd sock(::socket(s.family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP));
  if (!sock) throw SysError(fmt::format("cannot restore {}: socket(TCP)", what), errno);
  set_socket_options(sock.get(), f, what);
  int on = TCP_REPAIR_ON;
  if (::setsockopt(sock.get(), SOL_TCP, TCP_REPAIR, &on, sizeof on) < 0)
    throw SysError(fmt::format("cannot restore {}: setsockopt(TCP_REPAIR) for the TCP connection "
                               "{} -> {}",
                               what, printable(s.family, s.local, s.local_port),
                               printable(s.family, s.peer, s.peer_port)),
                   errno, errno == EPERM ? "restoring a TCP connection needs CAP_NET_ADMIN: "
                                           "run snap restore as root"
                                         : "");
  // In repair mode the port may be shared with a listener or a dead
  // connection of the job (SO_REUSEADDR is forced).
  sockaddr_storage ss;
  socklen_t len = inet_sockaddr(s.family, s.local, s.local_port, ss, what);
  if (::bind(sock.get(), reinterpret_cast<sockaddr*>(&ss), len) < 0)
    throw SysError(fmt::format("cannot restore {}: bind to {}", what,
                               printable(s.family, s.local, s.local_port)),
                   errno, errno == EADDRINUSE ? "another connection holds this address pair now"
                                              : "");
  // Each queue's sequence number where its data starts; filling it moves it on.
  select_queue(sock.get(), TCP_RECV_QUEUE, what);
  set_int(sock.get(), SOL_TCP, TCP_QUEUE_SEQ,
          static_cast<int>(t.recv_seq - static_cast<uint32_t>(t.recv_queue.size())),
          "setsockopt(TCP_QUEUE_SEQ) of the receive queue", what);
  select_queue(sock.get(), TCP_SEND_QUEUE, what);
  set_int(sock.get(), SOL_TCP, TCP_QUEUE_SEQ,
          static_cast<int>(t.send_seq - static_cast<uint32_t>(t.send_queue.size())),
          "setsockopt(TCP_QUEUE_SEQ) of the send queue", what);
  select_queue(sock.get(), TCP_NO_QUEUE, what);
  // The segment size is fixed when the socket connects, from the clamp it
  // has then: the peer's MSS, given below with the repair options, comes
  // too late for it (the socket would send 536-byte segments for the rest
  // of its life, a hundredth of loopback's). The clamp is given as the
  // socket's own TCP_MAXSEG for the connect (at most 32767, the kernel's
  // limit for it; loopback's 65495 then gives half-size segments), and
  // taken off again after: a connected socket never uses it again. Where
  // the kernel refuses it (a peer's MSS under its 88), the connection comes
  // back all the same, with small segments.
  const int clamp = static_cast<int>(std::min<uint32_t>(t.mss, 32767));
  const bool clamped = clamp >= 88 && ::setsockopt(sock.get(), SOL_TCP, TCP_MAXSEG, &clamp,
                                                   sizeof clamp) == 0;
  if (!clamped) vlog("{}: segment size {} not given for the connect", what, t.mss);
  len = inet_sockaddr(s.family, s.peer, s.peer_port, ss, what);
  if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&ss), len) < 0)  // no packet in repair mode
    throw SysError(fmt::format("cannot restore {}: connect (repair mode) to {}", what,
                               printable(s.family, s.peer, s.peer_port)),
                   errno);
  if (clamped) set_int(sock.get(), SOL_TCP, TCP_MAXSEG, 0, "setsockopt(TCP_MAXSEG, 0)", what);
  tcp_repair_opt opts[4];
  int n = 0;
  if (t.options & TCPI_OPT_SACK) opts[n++] = {TCPOPT_SACK_PERMITTED, 0};
  if (t.options & TCPI_OPT_WSCALE) opts[n++] = {TCPOPT_WINDOW, t.snd_wscale + (t.rcv_wscale << 16)};
  if (t.options & TCPI_OPT_TIMESTAMPS) opts[n++] = {TCPOPT_TIMESTAMP, 0};
  opts[n++] = {TCPOPT_MAXSEG, t.mss};
  set(sock.get(), SOL_TCP, TCP_REPAIR_OPTIONS, opts, static_cast<socklen_t>(n * sizeof opts[0]),
      "setsockopt(TCP_REPAIR_OPTIONS)", what);
  if (t.options & TCPI_OPT_TIMESTAMPS)
    set(sock.get(), SOL_TCP, TCP_TIMESTAMP, &t.timestamp, sizeof t.timestamp,
        "setsockopt(TCP_TIMESTAMP)", what);
  // Data the job had not read, and data sent but not acknowledged (the
  // kernel sends it again if the peer asks); the unsent rest follows
  // repair mode.
  make_room(sock.get(), SO_RCVBUF, SO_RCVBUFFORCE, t.recv_queue.size(), what);
  make_room(sock.get(), SO_SNDBUF, SO_SNDBUFFORCE, t.send_queue.size(), what);
  if (!t.recv_queue.empty()) {
    select_queue(sock.get(), TCP_RECV_QUEUE, what);
    send_all(sock.get(), t.recv_queue.data(), t.recv_queue.size(), "receive", what);
  }
  const size_t sent = t.send_queue.size() - t.unsent;
  if (sent) {
    select_queue(sock.get(), TCP_SEND_QUEUE, what);
    send_all(sock.get(), t.send_queue.data(), sent, "send", what);
  }
  select_queue(sock.get(), TCP_NO_QUEUE, what);
  if (t.window) {
    const auto& w = *t.window;
    tcp_repair_window rw{w[0], w[1], w[2], w[3], w[4]};
    set(sock.get(), SOL_TCP, TCP_REPAIR_WINDOW, &rw, sizeof rw, "setsockopt(TCP_REPAIR_WINDOW)",
        what);
  }
  return sock;
}

ScopedFd make_closed_tcp_connection(const image::FileDesc& f, const std::string& what) {
  const auto& s = *f.inet_socket;
  ScopedFd sock(::socket(s.family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP));
  if (!sock) throw SysError(fmt::format("cannot restore {}: socket(TCP)", what), errno);
  set_socket_options(sock.get(), f, what);
  shutdown_socket(sock.get(), 3, what);  // ENOTCONN, but shut down all the same
  return sock;
}

void leave_tcp_repair(int sock, const image::FileDesc& f, const std::string& what) {
  set_int(sock, SOL_TCP, TCP_REPAIR, TCP_REPAIR_OFF, "setsockopt(TCP_REPAIR, off)", what);
  // Leaving repair mode clears SO_REUSEADDR.
  for (const auto& o : f.sock_options)
    if (o.level == SOL_SOCKET && o.name == SO_REUSEADDR)
      set(sock, o.level, o.name, o.value.data(), static_cast<socklen_t>(o.value.size()),
          "setsockopt(SO_REUSEADDR)", what);
}

void finish_tcp_connection(int sock, const image::FileDesc& f, const std::string& what) {
  const auto& s = *f.inet_socket;
  const auto& t = *s.tcp;
  if (t.unsent)
    send_all(sock, t.send_queue.data() + (t.send_queue.size() - t.unsent), t.unsent, "unsent send",
             what);
  // Buffer sizes the job set, as it set them (make_room may have grown them).
  // A receive buffer whose queue it does not hold stays as grown: the
  // window the socket offered on leaving repair mode came from it, and a
  // buffer shrunk under its queue makes the kernel drop what comes in and
  // close the window to zero behind data its peer already sent, whose
  // acknowledgements it then drops as beyond that window: both ends wait
  // for ever (seen with a job that set SO_RCVBUF after 15 MB had queued).
  for (const auto& o : f.sock_options)
    if (o.level == SOL_SOCKET && (o.name == SO_RCVBUF || o.name == SO_SNDBUF) &&
        o.value.size() == sizeof(int)) {
      int v;
      std::memcpy(&v, o.value.data(), sizeof v);
      if (o.name == SO_RCVBUF && static_cast<size_t>(v) < room_for(t.recv_queue.size())) {
        vlog("{}: receive buffer left at the size that holds its {} queued bytes, not the job's "
             "{} bytes", what, t.recv_queue.size(), v);
        continue;
      }
      v /= 2;  // the kernel doubles what it is given
      set_int(sock, SOL_SOCKET, o.name, v, "setsockopt(SO_RCVBUF / SO_SNDBUF)", what);
    }
  // A FIN the job had sent goes out again after its data.
  shutdown_socket(sock, s.shutdown, what);
}

}  // namespace snap::restore

namespace snap::restore {

namespace {

// A TCP socket with `f`'s options, bound to its own address and port
// with SO_REUSEADDR (other connections of the image share the port), with
// a receive buffer that holds `incoming` bytes without a reader.
ScopedFd bound_tcp_socket(const image::FileDesc& f, size_t incoming, const std::string& what) {
  const auto& s = *f.inet_socket;
  ScopedFd sock(::socket(s.family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP));
  if (!sock) throw SysError(fmt::format("cannot restore {}: socket", what), errno);
  set_socket_options(sock.get(), f, what);  // some only before bind (IPV6_V6ONLY)
  set_int(sock.get(), SOL_SOCKET, SO_REUSEADDR, 1, "setsockopt(SO_REUSEADDR)", what);
  // Room for what its peer sends it before anyone reads (SO_RCVBUF: at
  // most net.core.rmem_max without CAP_NET_ADMIN), the buffer's lock left
  // as it was, so that the kernel goes on tuning one the job left to it.
  int rcvbuf = 0, locks = 0;
  socklen_t olen = sizeof rcvbuf;
  ::getsockopt(sock.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, &olen);
  const size_t want = room_for(incoming);
  olen = sizeof locks;
  if (incoming && static_cast<size_t>(rcvbuf) < want &&
      ::getsockopt(sock.get(), SOL_SOCKET, kSoBufLock, &locks, &olen) == 0) {
    int size = static_cast<int>(std::min<size_t>(want, 1u << 30));
    ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    ::setsockopt(sock.get(), SOL_SOCKET, kSoBufLock, &locks, sizeof locks);
  }
  sockaddr_storage ss;
  socklen_t len = inet_sockaddr(s.family, s.local, s.local_port, ss, what);
  int rc = bind_tcp(sock.get(), ss, len, s.local_port, what);
  if (rc < 0)
    throw SysError(fmt::format("cannot restore {}: bind to {}", what,
                               printable(s.family, s.local, s.local_port)),
                   errno, errno == EADDRINUSE ? "another process holds this address now (the "
                                                "checkpointed job itself, if it still runs, or a "
                                                "connection it closed, for a minute after): "
                                                "restore again when it is free"
                                              : "");
  return sock;
}

// Sends all of `data` on `sock`, which its peer does not read yet: the
// peer's receive buffer must take it.
void send_unread(int sock, const std::vector<uint8_t>& data, const std::string& what) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::send(sock, data.data() + done, data.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN)
      throw SysError(fmt::format("cannot restore {}: sending its unread data", what), errno);
    pollfd p{sock, POLLOUT, 0};
    if (::poll(&p, 1, 2000) <= 0)
      throw Error(fmt::format("cannot restore {}: its peer's receive buffer took {} of the {} "
                              "bytes it had not read",
                              what, done, data.size()),
                  "without CAP_NET_ADMIN a receive buffer is at most net.core.rmem_max; restore "
                  "as root, or checkpoint when less is waiting");
  }
}

}  // namespace

std::pair<ScopedFd, ScopedFd> make_tcp_pair(const image::FileDesc& client,
                                            const image::FileDesc& server, const std::string& what) {
  const auto& c = *client.inet_socket;
  const auto& s = *server.inet_socket;
  // What waits at each end was sent by the other one.
  const auto& to_server = s.tcp->recv_queue;
  const auto& to_client = c.tcp->recv_queue;
  ScopedFd listener = bound_tcp_socket(server, to_server.size(), what + "'s peer");
  if (::listen(listener.get(), 1) < 0)
    throw SysError(fmt::format("cannot restore {}: listen on {} for a moment", what,
                               printable(s.family, s.local, s.local_port)),
                   errno);
  ScopedFd mine = bound_tcp_socket(client, to_client.size(), what);
  sockaddr_storage ss;
  socklen_t len = inet_sockaddr(c.family, c.peer, c.peer_port, ss, what);  // as the client saw it
  int rc;
  do rc = ::connect(mine.get(), reinterpret_cast<sockaddr*>(&ss), len);
  while (rc < 0 && errno == EINTR);
  if (rc < 0)
    throw SysError(fmt::format("cannot restore {}: connect to {}", what,
                               printable(c.family, c.peer, c.peer_port)),
                   errno);
  sockaddr_storage from{};
  socklen_t from_len = sizeof from;
  ScopedFd theirs(::accept4(listener.get(), reinterpret_cast<sockaddr*>(&from), &from_len,
                            SOCK_CLOEXEC));
  if (!theirs) throw SysError(fmt::format("cannot restore {}: accept", what), errno);
  const uint16_t from_port = from.ss_family == AF_INET6
                                 ? ntohs(reinterpret_cast<sockaddr_in6&>(from).sin6_port)
                                 : ntohs(reinterpret_cast<sockaddr_in&>(from).sin_port);
  if (from_port != c.local_port)  // someone else on this host connected first
    throw Error(fmt::format("cannot restore {}: another connection came in on {} while it was "
                            "listened on for a moment (from port {})",
                            what, printable(s.family, s.local, s.local_port), from_port),
                "restore again");
  // The accepted socket has the listener's options. Both keep SO_REUSEADDR
  // (whatever the job had: a connected socket never binds again), so that
  // the other connections and the listener of the image on the same port
  // can bind beside them.
  listener.reset();
  send_unread(mine.get(), to_server, what);
  send_unread(theirs.get(), to_client, what + "'s peer");
  // Shut down as they were: a FIN one end sent, now after its data.
  for (auto [sock, f, peer] : {std::tuple{mine.get(), &c, &s}, std::tuple{theirs.get(), &s, &c}}) {
    int how = -1;
    if (f->shutdown & 2) how = SHUT_WR;
    if ((f->shutdown & 1) && !(peer->shutdown & 2)) how = how == SHUT_WR ? SHUT_RDWR : SHUT_RD;
    if (how >= 0 && ::shutdown(sock, how) < 0)
      throw SysError(fmt::format("cannot restore {}: shutdown", what), errno);
  }
  return {std::move(mine), std::move(theirs)};
}

}  // namespace snap::restore
