#include "tracer/sockets.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"
#include "tracer/sock_diag.h"
#include "tracer/sock_options.h"
#include "tracer/tcp_repair.h"

namespace snap {

namespace {

// A unix socket address's path as the kernel gives it (sock_diag, the
// sender of a message): "@name" for the abstract namespace, the path
// without its trailing NULs, or "" (unnamed).
std::string unix_name(std::string raw) {
  if (!raw.empty() && raw[0] == '\0') return "@" + raw.substr(1);
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  return raw;
}

constexpr int kTcpListen = 10;  // udiag_state of a listening socket

uint32_t u32_at(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

bool parse_unix_diag(const uint8_t* buf, size_t len, std::vector<UnixDiag>& out) {
  return for_each_diag_message(buf, len, "unix sockets", [&](const uint8_t* body, size_t body_len) {
    if (body_len < sizeof(unix_diag_msg))
      throw Error(fmt::format("sock_diag: short unix_diag_msg ({} bytes)", body_len));
    unix_diag_msg m;
    std::memcpy(&m, body, sizeof m);
    UnixDiag d;
    d.inode = m.udiag_ino;
    d.type = m.udiag_type;
    d.state = m.udiag_state;
    auto attr = [&](uint16_t type, const uint8_t* data, size_t data_len) {
      switch (type) {
        case UNIX_DIAG_NAME:
          d.name = unix_name(std::string(reinterpret_cast<const char*>(data), data_len));
          break;
        case UNIX_DIAG_PEER:
          if (data_len >= 4) d.peer_inode = u32_at(data);
          break;
        case UNIX_DIAG_ICONS:
          for (size_t i = 0; i + 4 <= data_len; i += 4) d.icons.push_back(u32_at(data + i));
          break;
        case UNIX_DIAG_SHUTDOWN:
          if (data_len >= 1) d.shutdown = data[0];
          break;
        case UNIX_DIAG_VFS:
          if (data_len >= sizeof(unix_diag_vfs)) d.vfs_inode = u32_at(data);
          break;
        case UNIX_DIAG_RQLEN:
          if (data_len >= sizeof(unix_diag_rqlen)) {
            d.has_rqlen = true;
            d.rqueue = u32_at(data);
            d.wqueue = u32_at(data + 4);
          }
          break;
        default:
          break;
      }
    };
    for_each_diag_attr(body, body_len, NLMSG_ALIGN(sizeof m), d.inode, attr);
    out.push_back(std::move(d));
  });
}

std::map<uint64_t, UnixDiag> query_unix_sockets() {
  struct {
    nlmsghdr h;
    unix_diag_req r;
  } req{};
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.h.nlmsg_seq = 1;
  req.r.sdiag_family = AF_UNIX;
  req.r.udiag_states = ~0u;
  req.r.udiag_show =
      UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_VFS | UDIAG_SHOW_ICONS;
  std::vector<UnixDiag> all;
  sock_diag_dump(&req, sizeof req, "unix sockets",
                 [&](const uint8_t* buf, size_t len) { return parse_unix_diag(buf, len, all); });
  std::map<uint64_t, UnixDiag> out;
  for (auto& d : all) out[d.inode] = std::move(d);
  return out;
}

namespace {

// Sets the socket's SO_PEEK_OFF to 0 and back to what it was.
class PeekOffset {
 public:
  PeekOffset(int sock, const std::string& what) : sock_(sock) {
    socklen_t len = sizeof old_;
    if (::getsockopt(sock, SOL_SOCKET, SO_PEEK_OFF, &old_, &len) < 0)
      throw SysError("getsockopt(SO_PEEK_OFF) on " + what, errno);
    set(0, what);
  }
  ~PeekOffset() {
    if (::setsockopt(sock_, SOL_SOCKET, SO_PEEK_OFF, &old_, sizeof old_) < 0)
      warn("could not set SO_PEEK_OFF back to {}: {}", old_, std::strerror(errno));
  }
  PeekOffset(const PeekOffset&) = delete;
  PeekOffset& operator=(const PeekOffset&) = delete;

 private:
  void set(int v, const std::string& what) {
    if (::setsockopt(sock_, SOL_SOCKET, SO_PEEK_OFF, &v, sizeof v) < 0)
      throw SysError("setsockopt(SO_PEEK_OFF, " + std::to_string(v) + ") on " + what, errno);
  }
  int sock_;
  int old_ = -1;
};

// One MSG_PEEK recvmsg into [data, data + len). Fds passed along with the
// data would be installed in snap by the peek: they are closed again and
// the dump refused (restore could not pass them again). Returns the
// recvmsg result, or -errno.
ssize_t peek_once(int sock, void* data, size_t len, int extra_flags, const std::string& what,
                  std::vector<ScopedFd>* passed = nullptr, std::string* sender = nullptr) {
  iovec iov{data, len};
  alignas(cmsghdr) char control[1024];
  sockaddr_un from{};
  msghdr msg{};
  if (sender) {
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
  }
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(sock, &msg, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC | extra_flags);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  if (sender) {
    const size_t at = offsetof(sockaddr_un, sun_path);
    *sender = msg.msg_namelen > at ? unix_name(std::string(from.sun_path, msg.msg_namelen - at)) : "";
  }
  bool fds = false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    fds = true;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (passed)
        passed->emplace_back(fd);
      else
        ::close(fd);
    }
  }
  if (passed && !(msg.msg_flags & MSG_CTRUNC)) return n;
  if (fds || (msg.msg_flags & MSG_CTRUNC))
    throw Error(what + ": file descriptors are queued on it (SCM_RIGHTS), which snap cannot save",
                "let the job receive them before checkpointing");
  return n;
}

}  // namespace

std::vector<std::vector<uint8_t>> peek_unix_queue(int sock, int type, const std::string& what,
                                                   bool shut_for_reading,
                                                   std::vector<std::vector<ScopedFd>>* passed,
                                                   std::vector<std::string>* senders) {
  std::vector<std::vector<uint8_t>> out;
  PeekOffset offset(sock, what);
  if (type == SOCK_STREAM) {
    std::vector<uint8_t> all, chunk(1 << 16);
    for (;;) {
      ssize_t n = peek_once(sock, chunk.data(), chunk.size(), 0, what);
      if (n == -EAGAIN || n == 0) break;  // all peeked, or end of stream
      if (n < 0) throw SysError("recv(MSG_PEEK) on " + what, static_cast<int>(-n));
      all.insert(all.end(), chunk.begin(), chunk.begin() + n);
    }
    if (!all.empty()) out.push_back(std::move(all));
    return out;
  }
  for (;;) {
    // The length of the next message first (MSG_TRUNC, nothing copied, the
    // peek offset stays), then the message itself.
    char none;
    std::vector<ScopedFd> fds;  // the length probe gets them too; dropped
    ssize_t n = peek_once(sock, &none, 0, MSG_TRUNC, what, passed ? &fds : nullptr);
    fds.clear();
    if (n == -EAGAIN) break;
    if (n < 0) throw SysError("recv(MSG_PEEK | MSG_TRUNC) on " + what, static_cast<int>(-n));
    // Shut down for reading, an empty queue reads as 0 (end of file).
    if (n == 0 && shut_for_reading) break;
    if (n == 0)
      throw Error(what + ": a zero-length message is queued; peeking cannot step over it, so "
                         "the rest of the queue cannot be read without consuming it",
                  "let the job read its queue before checkpointing");
    std::vector<uint8_t> message(static_cast<size_t>(n));
    std::string sender;
    ssize_t got = peek_once(sock, message.data(), message.size(), 0, what, passed ? &fds : nullptr,
                            senders && type == SOCK_DGRAM ? &sender : nullptr);
    if (got < 0) throw SysError("recv(MSG_PEEK) on " + what, static_cast<int>(-got));
    if (got != n)
      throw Error(fmt::format("{}: message of {} bytes peeked as {} bytes", what, n, got));
    out.push_back(std::move(message));
    if (passed) passed->push_back(std::move(fds));
    if (senders) senders->push_back(std::move(sender));
  }
  return out;
}

ScopedFd copy_target_fd(pid_t pid, int fd) {
  ScopedFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) throw SysError(fmt::format("pidfd_open(pid {})", pid), errno);
  ScopedFd copy(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), fd, 0)));
  if (!copy) throw SysError(fmt::format("pidfd_getfd(pid {}, fd {})", pid, fd), errno);
  return copy;
}

namespace {

// The name a unix socket was bound to, as a path snap can stat: relative
// names were relative to the binder's working directory, taken to be the
// process's current one.
std::string socket_file(const image::Process& p, const std::string& name) {
  if (name.empty() || name[0] == '@') return name;
  // bind() took the name from the process's own root (a container's, a
  // chroot's) or working directory.
  if (name[0] == '/') return fmt::format("/proc/{}/root{}", p.pid, name);
  return fmt::format("/proc/{}/cwd/{}", p.pid, name);
}

// A file passed in flight (SCM_RIGHTS), as restore can make it again: a
// pipe end with nothing unread, or a regular file.
image::FileDesc describe_passed(int fd, const std::string& what) {
  image::FileDesc d;
  d.fd = -1;
  struct stat st {};
  if (::fstat(fd, &st) < 0) throw SysError("fstat of a file in flight on " + what, errno);
  char link[256] = "";
  ssize_t n = ::readlink(fmt::format("/proc/self/fd/{}", fd).c_str(), link, sizeof link - 1);
  d.path = n > 0 ? std::string(link, static_cast<size_t>(n)) : "";
  d.flags = ::fcntl(fd, F_GETFL);
  d.inode = st.st_ino;
  d.mode = st.st_mode;
  if (S_ISFIFO(st.st_mode) && d.path.starts_with("pipe:")) {
    d.type = image::FdType::Pipe;
    int unread = 0;
    if ((d.flags & O_ACCMODE) == O_RDONLY && ::ioctl(fd, FIONREAD, &unread) == 0 && unread > 0)
      throw Error(fmt::format("{}: a pipe passed in flight on it (SCM_RIGHTS) holds {} unread "
                              "bytes, which snap cannot save",
                              what, unread),
                  "let the job receive the pipe before checkpointing");
    return d;
  }
  if (S_ISREG(st.st_mode) && !d.path.ends_with(" (deleted)")) {
    d.type = image::FdType::Regular;
    d.size = static_cast<uint64_t>(st.st_size);
    off_t pos = ::lseek(fd, 0, SEEK_CUR);
    d.pos = pos > 0 ? static_cast<uint64_t>(pos) : 0;
    return d;
  }
  throw Error(fmt::format("{}: {} is passed in flight on it (SCM_RIGHTS); snap can save only "
                          "pipes and regular files passed this way",
                          what, d.path),
              "let the job receive it before checkpointing");
}

void describe_unix(const image::Process& p, const UnixDiag& u,
                   const std::map<uint64_t, UnixDiag>& diag, int sock, const std::string& what,
                   image::UnixSocket& s) {
  s.type = u.type;
  s.state = u.state;
  s.peer_inode = u.peer_inode;
  s.name = u.name;
  s.shutdown = u.shutdown;
  if (!u.name.empty() && u.name[0] != '@') {
    s.name_inode = u.vfs_inode;
    struct stat st {};
    std::string file = socket_file(p, u.name);
    s.name_deleted = ::stat(file.c_str(), &st) != 0 || st.st_ino != u.vfs_inode;
    if (!s.name_deleted)
      s.name_file = image::UnixSocket::NameFile{st.st_mode & 07777, st.st_uid, st.st_gid};
  }
  if (u.state == kTcpListen) {
    s.backlog = static_cast<int>(u.wqueue);
    // Connections not yet accepted come back from their connecting sockets
    // (check_sockets_restorable: which must be in the image), connected again.
    for (uint64_t c : u.icons)
      if (!c)
        throw Error(fmt::format("{}: a connection waits to be accepted on this listening "
                                "socket{} whose connecting socket was closed; snap cannot see "
                                "what it sent",
                                what, u.name.empty() ? "" : " " + u.name),
                    "checkpoint when the job has accepted it; nothing was killed");
    s.pending = u.icons;
    if (u.has_rqlen && u.rqueue != u.icons.size())
      throw Error(fmt::format("{}: {} connection(s) wait to be accepted on this listening "
                              "socket{}, sock_diag lists {}",
                              what, u.rqueue, u.name.empty() ? "" : " " + u.name, u.icons.size()),
                  "checkpoint when no connection is pending");
    return;
  }
  // Connected, its peer the socket a listener made for the connection,
  // which is not accepted yet (it has no inode): restore connects again.
  if (u.state == 1 && !u.peer_inode)
    for (const auto& [inode, l] : diag)
      if (l.state == kTcpListen && std::find(l.icons.begin(), l.icons.end(), u.inode) != l.icons.end()) {
        s.pending_on = inode;
        // What it sent waits on the connection's socket, out of reach of
        // a peek; sock_diag counts it as this socket's write queue.
        if (u.has_rqlen && u.wqueue > 0)
          throw Error(fmt::format("{}: it sent data ({} bytes in flight) on a connection that "
                                  "waits to be accepted on{} (socket inode {}); snap cannot "
                                  "read it without accepting it",
                                  what, u.wqueue, l.name.empty() ? "" : " " + l.name, inode),
                      "checkpoint when the job has accepted the connection; nothing was killed");
        break;
      }
  // Connected to a socket snap will not see in the image: its name, to
  // connect to again (dgram); stream connections are refused later.
  if (u.peer_inode)
    if (auto peer = diag.find(u.peer_inode); peer != diag.end()) s.peer_name = peer->second.name;
  // An unconnected stream or seqpacket socket has nothing to read (and
  // recv says EINVAL).
  if (u.type != SOCK_DGRAM && u.state != 1) return;
  std::vector<std::vector<ScopedFd>> passed;
  s.queue = peek_unix_queue(sock, u.type, what, (u.shutdown & 1) != 0,
                            u.type == SOCK_STREAM ? nullptr : &passed, &s.queue_senders);
  // Kept where a message came from a named socket (a datagram's sender,
  // which the receiver's recvfrom gives).
  if (std::all_of(s.queue_senders.begin(), s.queue_senders.end(),
                  [](const std::string& n) { return n.empty(); }))
    s.queue_senders.clear();
  bool any = false;
  for (const auto& m : passed) any |= !m.empty();
  if (any)
    for (const auto& m : passed) {
      s.queue_fds.emplace_back();
      for (const auto& fd : m) s.queue_fds.back().push_back(describe_passed(fd.get(), what));
    }
  // sock_diag's count checks the peek: stream and seqpacket report
  // all bytes queued, dgram the length of the first message.
  if (u.has_rqlen) {
    uint64_t peeked = 0;
    for (const auto& m : s.queue) peeked += m.size();
    uint64_t expect = u.rqueue;
    uint64_t got = u.type == SOCK_DGRAM ? (s.queue.empty() ? 0 : s.queue[0].size()) : peeked;
    if (got != expect)
      throw Error(fmt::format("{}: peeking its queue gave {} bytes where the kernel counts {}; "
                              "the image would lose data",
                              what, got, expect),
                  "a process outside the checkpoint may be writing to it");
  }
}

}  // namespace

void collect_sockets(std::vector<image::Process>& procs) {
  std::map<uint64_t, UnixDiag> diag;
  bool queried = false;
  InetDiags inet_diags;  // by a lookup a TCP socket, else a dump per family and protocol
  SocketDefaults defaults;  // a new socket's options, per kind
  // A socket's facts (and queue) once, for all its fds.
  std::map<uint64_t, const image::FileDesc*> done;
  for (auto& p : procs) {
    for (auto& f : p.fds) {
      if (f.type != image::FdType::Socket) continue;
      const std::string what =
          fmt::format("pid {} fd {} (socket inode {})", p.pid, f.fd, f.inode);
      if (auto it = done.find(f.inode); it != done.end()) {
        f.unix_socket = it->second->unix_socket;
        f.inet_socket = it->second->inet_socket;
        f.sock_options = it->second->sock_options;
        f.sock_filter = it->second->sock_filter;
        continue;
      }
      ScopedFd sock = copy_target_fd(p.pid, f.fd);
      struct stat st {};
      if (::fstat(sock.get(), &st) < 0) throw SysError("fstat of a copy of " + what, errno);
      if (st.st_ino != f.inode)
        throw Error(what + ": the fd now refers to inode " + std::to_string(st.st_ino));
      int domain = 0, type = 0, protocol = 0;
      socklen_t len = sizeof domain;
      if (::getsockopt(sock.get(), SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
        throw SysError("getsockopt(SO_DOMAIN) on " + what, errno);
      len = sizeof type;
      if (::getsockopt(sock.get(), SOL_SOCKET, SO_TYPE, &type, &len) < 0)
        throw SysError("getsockopt(SO_TYPE) on " + what, errno);
      len = sizeof protocol;
      if (::getsockopt(sock.get(), SOL_SOCKET, SO_PROTOCOL, &protocol, &len) < 0)
        throw SysError("getsockopt(SO_PROTOCOL) on " + what, errno);
      done.emplace(f.inode, &f);
      if (domain == AF_UNIX) {
        if (!queried) {
          diag = query_unix_sockets();
          queried = true;
        }
        auto d = diag.find(f.inode);
        if (d == diag.end())
          throw Error(what + ": sock_diag does not know this unix socket",
                      "is the job in another network namespace than snap?");
        f.unix_socket.emplace();
        describe_unix(p, d->second, diag, sock.get(), what, *f.unix_socket);
      } else if (domain == AF_INET || domain == AF_INET6) {
        // A raw socket (CAP_NET_RAW) is no connection and no datagram
        // socket of its protocol: describing it as one misreads it (TCP_INFO
        // fails), and a restore has never made one.
        if (type == SOCK_RAW)
          throw Error(fmt::format("{}: a raw IP socket (SOCK_RAW, protocol {}); snap cannot "
                                  "restore raw sockets",
                                  what, protocol),
                      "close it before checkpointing; nothing was killed");
        uint32_t pending = 0;
        int queued = 0;
        f.inet_socket = describe_inet_socket(sock.get(), domain, type, protocol, what, inet_diags,
                                             pending, queued);
        const auto& s = *f.inet_socket;
        if (pending)
          throw Error(fmt::format("{}: {} connection(s) wait to be accepted on this listening "
                                  "socket {}; snap cannot save them",
                                  what, pending, inet_address(s.local, s.local_port, domain)),
                      "checkpoint when no connection is pending");
        if (queued > 0 && type == SOCK_DGRAM)
          warn("{}: datagrams waiting on {} are dropped (as a network may drop them)", what,
               inet_address(s.local, s.local_port, domain));
      } else {
        continue;  // check_sockets_restorable refuses these
      }
      f.sock_options = changed_socket_options(sock.get(), domain, type, protocol, defaults);
      f.sock_filter = socket_filter(sock.get(), what);
    }
  }
}

std::set<uint64_t> root_stdio_sockets(const std::vector<image::Process>& procs) {
  std::set<uint64_t> out;
  if (!procs.empty())
    for (const auto& f : procs[0].fds)
      if (f.fd <= 2 && f.type == image::FdType::Socket) out.insert(f.inode);
  return out;
}

void mark_closed_outside_connections(std::vector<image::Process>& procs) {
  const std::set<uint64_t> root_stdio = root_stdio_sockets(procs);
  for (auto& p : procs)
    for (auto& f : p.fds) {
      auto& s = f.inet_socket;
      if (!s || s->protocol != IPPROTO_TCP || s->tcp || s->state == kTcpListen || s->state == 7 ||
          root_stdio.count(f.inode) || tcp_peer_in_image(procs, *s))
        continue;
      s->closed = true;
      vlog("pid {} fd {}: TCP connection {} -> {} saved as closed", p.pid, f.fd,
           inet_address(s->local, s->local_port, s->family),
           inet_address(s->peer, s->peer_port, s->family));
    }
}

void check_sockets_restorable(const std::vector<image::Process>& procs, bool tcp_established,
                              bool tcp_close) {
  std::map<uint64_t, const image::FileDesc*> in_image;
  for (const auto& p : procs)
    for (const auto& f : p.fds)
      if (f.type == image::FdType::Socket) in_image[f.inode] = &f;
  // The root's stdio leading outside is snap restore's own at restore.
  const std::set<uint64_t> root_stdio = root_stdio_sockets(procs);
  for (const auto& p : procs)
    for (const auto& f : p.fds) {
      if (f.type != image::FdType::Socket || root_stdio.count(f.inode)) continue;
      const std::string what = fmt::format("pid {} fd {}", p.pid, f.fd);
      if (const auto& s = f.inet_socket) {
        if (s->state == kTcpListen || s->state == 7 || s->protocol != IPPROTO_TCP) continue;
        const bool peer_here = tcp_peer_in_image(procs, *s);
        if (tcp_repairable_state(s->state) && (peer_here || tcp_established))
          continue;  // saved by TcpRepair
        if (!peer_here && tcp_close) continue;  // saved as closed
        const std::string conn =
            fmt::format("{}: TCP connection {} -> {} ({})", what,
                        inet_address(s->local, s->local_port, s->family),
                        inet_address(s->peer, s->peer_port, s->family),
                        s->state == 1 ? "established" : "state " + std::to_string(s->state));
        if (!peer_here)
          throw Error(conn + ": its peer is outside the checkpointed processes and would not "
                             "know the new socket",
                      "checkpoint the whole process tree, or pass --tcp-close to save it as "
                      "closed (a job that reconnects goes on after a restore), or save it whole "
                      "with --tcp-established (needs CAP_NET_ADMIN); nothing was killed");
        throw Error(conn + ": snap restores established and half-closed TCP connections only "
                           "(not connecting or closing ones)",
                    "checkpoint when the connection is established or closed; nothing was killed");
      }
      if (const auto& u = f.unix_socket) {
        if (u->detached_peer) continue;  // connected to snap itself
        for (uint64_t c : u->pending)
          if (!in_image.count(c))
            throw Error(fmt::format("{}: a connection from socket inode {}, outside the "
                                    "checkpointed processes, waits to be accepted on listening "
                                    "socket {}",
                                    what, c, u->name.empty() ? "(unnamed)" : u->name),
                        "snap cannot restore a connection to a process it does not restore; "
                        "checkpoint when the job has accepted it; nothing was killed");
        if (u->pending_on) {
          if (in_image.count(u->pending_on)) continue;
          throw Error(fmt::format("{}: unix socket connected to listening socket inode {} "
                                  "outside the checkpointed processes, which has not accepted "
                                  "the connection yet",
                                  what, u->pending_on),
                      "snap cannot restore a connection to a process it does not restore; "
                      "nothing was killed");
        }
        if (!u->peer_inode) continue;
        if (auto peer = in_image.find(u->peer_inode); peer != in_image.end()) {
          // A datagram socket connected one way only gets its queue back
          // from a sender of ours, which needs a name to send to.
          const auto& pu = peer->second->unix_socket;
          bool mutual = pu && pu->peer_inode == f.inode;
          if (!mutual && !u->queue.empty() && u->name.empty())
            throw Error(fmt::format("{}: {} message(s) wait on an unnamed unix socket connected "
                                    "to {}; snap cannot queue them again",
                                    what, u->queue.size(), u->peer_name),
                        "checkpoint when the job has read them; nothing was killed");
          continue;
        }
        if (u->type == SOCK_DGRAM && !u->peer_name.empty()) continue;  // connected again by name
        throw Error(fmt::format("{}: unix socket {}connected to {} (socket inode {}), which is "
                                "outside the checkpointed processes",
                                what, u->name.empty() ? "" : u->name + " ",
                                u->peer_name.empty() ? "an unnamed socket" : u->peer_name,
                                u->peer_inode),
                    "snap cannot restore a connection to a process it does not restore; "
                    "checkpoint the whole process tree, or close the connection first; "
                    "nothing was killed");
      }
      if (!f.unix_socket && !f.inet_socket)
        throw Error(fmt::format("{}: {} is a socket of a family snap cannot restore (only unix, "
                                "IPv4 and IPv6 sockets)",
                                what, f.path),
                    "close it before checkpointing; nothing was killed");
    }
}

}  // namespace snap
