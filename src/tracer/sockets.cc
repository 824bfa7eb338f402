#include "tracer/sockets.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"

namespace snap {

namespace {

constexpr int kTcpListen = 10;  // udiag_state of a listening socket

uint32_t u32_at(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

bool parse_unix_diag(const uint8_t* buf, size_t len, std::vector<UnixDiag>& out) {
  size_t off = 0;
  while (off + sizeof(nlmsghdr) <= len) {
    nlmsghdr h;
    std::memcpy(&h, buf + off, sizeof h);
    if (h.nlmsg_len < sizeof h || off + h.nlmsg_len > len)
      throw Error(fmt::format("sock_diag: malformed netlink message (length {} at offset {} of {})",
                              h.nlmsg_len, off, len));
    const uint8_t* body = buf + off + NLMSG_HDRLEN;
    const size_t body_len = h.nlmsg_len - std::min<size_t>(h.nlmsg_len, NLMSG_HDRLEN);
    off += NLMSG_ALIGN(h.nlmsg_len);
    if (h.nlmsg_type == NLMSG_DONE) return true;
    if (h.nlmsg_type == NLMSG_ERROR) {
      int err = EPROTO;
      if (body_len >= sizeof(int32_t)) err = -static_cast<int32_t>(u32_at(body));
      throw SysError("sock_diag dump of unix sockets", err);
    }
    if (h.nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
    if (body_len < sizeof(unix_diag_msg))
      throw Error(fmt::format("sock_diag: short unix_diag_msg ({} bytes)", body_len));
    unix_diag_msg m;
    std::memcpy(&m, body, sizeof m);
    UnixDiag d;
    d.inode = m.udiag_ino;
    d.type = m.udiag_type;
    d.state = m.udiag_state;
    size_t a = NLMSG_ALIGN(sizeof m);
    while (a + sizeof(rtattr) <= body_len) {
      rtattr ra;
      std::memcpy(&ra, body + a, sizeof ra);
      if (ra.rta_len < sizeof ra || a + ra.rta_len > body_len)
        throw Error(fmt::format("sock_diag: malformed attribute of socket {}", d.inode));
      const uint8_t* data = body + a + RTA_LENGTH(0);
      const size_t data_len = ra.rta_len - RTA_LENGTH(0);
      switch (ra.rta_type) {
        case UNIX_DIAG_NAME: {
          std::string raw(reinterpret_cast<const char*>(data), data_len);
          if (!raw.empty() && raw[0] == '\0') {
            d.name = "@" + raw.substr(1);
          } else {
            while (!raw.empty() && raw.back() == '\0') raw.pop_back();
            d.name = raw;
          }
          break;
        }
        case UNIX_DIAG_PEER:
          if (data_len >= 4) d.peer_inode = u32_at(data);
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
      a += RTA_ALIGN(ra.rta_len);
    }
    out.push_back(std::move(d));
  }
  return false;
}

std::map<uint64_t, UnixDiag> query_unix_sockets() {
  ScopedFd nl(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!nl) throw SysError("socket(AF_NETLINK, NETLINK_SOCK_DIAG)", errno);
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
  req.r.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(nl.get(), &req, sizeof req, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
    throw SysError("send of the sock_diag request for unix sockets", errno);
  std::vector<UnixDiag> all;
  std::vector<uint8_t> buf(1 << 16);
  for (bool done = false; !done;) {
    ssize_t n = ::recv(nl.get(), buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw SysError("recv of the sock_diag answer for unix sockets", errno);
    if (n == 0) throw Error("sock_diag: the answer ended without NLMSG_DONE");
    done = parse_unix_diag(buf.data(), static_cast<size_t>(n), all);
  }
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
ssize_t peek_once(int sock, void* data, size_t len, int extra_flags, const std::string& what) {
  iovec iov{data, len};
  alignas(cmsghdr) char control[1024];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(sock, &msg, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC | extra_flags);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  bool fds = false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    fds = true;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      ::close(fd);
    }
  }
  if (fds || (msg.msg_flags & MSG_CTRUNC))
    throw Error(what + ": file descriptors are queued on it (SCM_RIGHTS), which snap cannot save",
                "let the job receive them before checkpointing");
  return n;
}

}  // namespace

std::vector<std::vector<uint8_t>> peek_unix_queue(int sock, int type, const std::string& what) {
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
    ssize_t n = peek_once(sock, &none, 0, MSG_TRUNC, what);
    if (n == -EAGAIN) break;
    if (n < 0) throw SysError("recv(MSG_PEEK | MSG_TRUNC) on " + what, static_cast<int>(-n));
    if (n == 0)
      throw Error(what + ": a zero-length message is queued; peeking cannot step over it, so "
                         "the rest of the queue cannot be read without consuming it",
                  "let the job read its queue before checkpointing");
    std::vector<uint8_t> message(static_cast<size_t>(n));
    ssize_t got = peek_once(sock, message.data(), message.size(), 0, what);
    if (got < 0) throw SysError("recv(MSG_PEEK) on " + what, static_cast<int>(-got));
    if (got != n)
      throw Error(fmt::format("{}: message of {} bytes peeked as {} bytes", what, n, got));
    out.push_back(std::move(message));
  }
  return out;
}

namespace {

ScopedFd copy_fd(pid_t pid, int fd) {
  ScopedFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) throw SysError(fmt::format("pidfd_open(pid {})", pid), errno);
  ScopedFd copy(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), fd, 0)));
  if (!copy) throw SysError(fmt::format("pidfd_getfd(pid {}, fd {})", pid, fd), errno);
  return copy;
}

}  // namespace

void collect_unix_sockets(std::vector<image::Process>& procs) {
  std::map<uint64_t, UnixDiag> diag;
  bool queried = false;
  // A socket's facts (and queue) once, for all its fds.
  std::map<uint64_t, image::UnixSocket> done;
  for (auto& p : procs) {
    for (auto& f : p.fds) {
      if (f.type != image::FdType::Socket) continue;
      const std::string what =
          fmt::format("pid {} fd {} (socket inode {})", p.pid, f.fd, f.inode);
      if (auto it = done.find(f.inode); it != done.end()) {
        f.unix_socket = it->second;
        continue;
      }
      ScopedFd sock = copy_fd(p.pid, f.fd);
      struct stat st {};
      if (::fstat(sock.get(), &st) < 0) throw SysError("fstat of a copy of " + what, errno);
      if (st.st_ino != f.inode)
        throw Error(what + ": the fd now refers to inode " + std::to_string(st.st_ino));
      int domain = 0;
      socklen_t len = sizeof domain;
      if (::getsockopt(sock.get(), SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
        throw SysError("getsockopt(SO_DOMAIN) on " + what, errno);
      if (domain != AF_UNIX) continue;  // restore refuses these; nothing to add
      if (!queried) {
        diag = query_unix_sockets();
        queried = true;
      }
      auto d = diag.find(f.inode);
      if (d == diag.end())
        throw Error(what + ": sock_diag does not know this unix socket",
                    "is the job in another network namespace than snap?");
      const UnixDiag& u = d->second;
      image::UnixSocket s;
      s.type = u.type;
      s.state = u.state;
      s.peer_inode = u.peer_inode;
      s.name = u.name;
      if (u.state == kTcpListen) {
        if (u.has_rqlen && u.rqueue > 0)
          throw Error(fmt::format("{}: {} connection(s) wait to be accepted on this listening "
                                  "socket; snap cannot save them",
                                  what, u.rqueue),
                      "checkpoint when no connection is pending");
      } else {
        s.queue = peek_unix_queue(sock.get(), u.type, what);
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
      done.emplace(f.inode, s);
      f.unix_socket = std::move(s);
    }
  }
}

}  // namespace snap
