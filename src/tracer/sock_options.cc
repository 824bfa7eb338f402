#include "tracer/sock_options.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstring>
#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"

namespace snap {

namespace {

// Newer than some libc headers (Linux 5.14 and 5.7).
constexpr int kSoBufLock = 72;     // SO_BUF_LOCK
constexpr int kIpv6Freebind = 78;  // IPV6_FREEBIND

struct OptionId {
  int level, name;
};

// The options snap carries over. Each is compared with a new socket's, so
// only what the job changed is recorded and set again.
constexpr OptionId kSocketOptions[] = {
    {SOL_SOCKET, SO_REUSEADDR}, {SOL_SOCKET, SO_REUSEPORT}, {SOL_SOCKET, SO_KEEPALIVE},
    {SOL_SOCKET, SO_BROADCAST}, {SOL_SOCKET, SO_RCVBUF},    {SOL_SOCKET, SO_SNDBUF},
    {SOL_SOCKET, SO_RCVLOWAT},  {SOL_SOCKET, SO_RCVTIMEO},  {SOL_SOCKET, SO_SNDTIMEO},
    {SOL_SOCKET, SO_PRIORITY},  {SOL_SOCKET, SO_LINGER},    {SOL_SOCKET, SO_OOBINLINE},
    {SOL_SOCKET, SO_PASSCRED},  {SOL_SOCKET, SO_TIMESTAMP}, {SOL_SOCKET, SO_NO_CHECK},
    {SOL_SOCKET, kSoBufLock},
};
constexpr OptionId kIpOptions[] = {
    {SOL_IP, IP_FREEBIND}, {SOL_IP, IP_TOS}, {SOL_IP, IP_TTL}, {SOL_IP, IP_RECVERR},
    {SOL_IP, IP_PKTINFO},  {SOL_IP, IP_MTU_DISCOVER},
};
constexpr OptionId kIpv6Options[] = {
    {SOL_IPV6, IPV6_V6ONLY},      {SOL_IPV6, IPV6_UNICAST_HOPS},
    {SOL_IPV6, IPV6_RECVPKTINFO}, {SOL_IPV6, kIpv6Freebind},
};
constexpr OptionId kTcpOptions[] = {
    {SOL_TCP, TCP_NODELAY},      {SOL_TCP, TCP_KEEPIDLE},     {SOL_TCP, TCP_KEEPINTVL},
    {SOL_TCP, TCP_KEEPCNT},      {SOL_TCP, TCP_USER_TIMEOUT}, {SOL_TCP, TCP_DEFER_ACCEPT},
    {SOL_TCP, TCP_CORK},
};

bool read_option(int sock, OptionId id, std::vector<uint8_t>& out) {
  uint8_t buf[64];
  socklen_t len = sizeof buf;
  if (::getsockopt(sock, id.level, id.name, buf, &len) < 0) return false;
  out.assign(buf, buf + len);
  return true;
}

template <size_t N>
void compare(int sock, int fresh, const OptionId (&ids)[N], std::vector<image::SockOpt>& out) {
  for (const auto& id : ids) {
    std::vector<uint8_t> mine, theirs;
    if (!read_option(sock, id, mine)) continue;  // not an option of this socket
    if (read_option(fresh, id, theirs) && mine == theirs) continue;
    out.push_back({id.level, id.name, std::move(mine)});
  }
}

}  // namespace

std::vector<image::SockOpt> changed_socket_options(int sock, int domain, int type, int protocol) {
  std::vector<image::SockOpt> out;
  // A new socket of the same kind has the defaults; without one (say, a
  // ping socket this user may not open) nothing is recorded.
  ScopedFd fresh(::socket(domain, type | SOCK_CLOEXEC, protocol));
  if (!fresh) {
    vlog("cannot open a socket ({}, {}, {}) to compare options with: {}", domain, type, protocol,
         std::strerror(errno));
    return out;
  }
  compare(sock, fresh.get(), kSocketOptions, out);
  if (domain == AF_INET || domain == AF_INET6) compare(sock, fresh.get(), kIpOptions, out);
  if (domain == AF_INET6) compare(sock, fresh.get(), kIpv6Options, out);
  if ((domain == AF_INET || domain == AF_INET6) && protocol == IPPROTO_TCP)
    compare(sock, fresh.get(), kTcpOptions, out);
  return out;
}

std::vector<uint8_t> socket_filter(int sock, const std::string& what) {
  // SO_GET_FILTER counts in instructions: a first call with none asks how many.
  socklen_t count = 0;
  if (::getsockopt(sock, SOL_SOCKET, SO_GET_FILTER, nullptr, &count) < 0) {
    if (errno == ENOPROTOOPT || errno == EINVAL) return {};
    throw SysError("getsockopt(SO_GET_FILTER) on " + what, errno);
  }
  if (count == 0) return {};
  std::vector<sock_filter> prog(count);
  if (::getsockopt(sock, SOL_SOCKET, SO_GET_FILTER, prog.data(), &count) < 0)
    throw SysError("getsockopt(SO_GET_FILTER) on " + what, errno);
  prog.resize(count);
  std::vector<uint8_t> out(prog.size() * sizeof(sock_filter));
  std::memcpy(out.data(), prog.data(), out.size());
  return out;
}

std::string inet_address(const std::string& addr, uint16_t port, int family) {
  return family == AF_INET6 ? fmt::format("[{}]:{}", addr, port) : fmt::format("{}:{}", addr, port);
}

namespace {

// sock_diag's view of one TCP or UDP socket.
struct InetDiag {
  bool found = false;
  int state = 0, shutdown = 0;
};

// Looks the socket with `inode` up in a sock_diag dump of its family and
// protocol. Not found (no diag module for the protocol): found = false.
InetDiag query_inet(int family, int protocol, uint64_t inode) {
  InetDiag out;
  ScopedFd nl(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!nl) return out;
  struct {
    nlmsghdr h;
    inet_diag_req_v2 r;
  } req{};
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.h.nlmsg_seq = 1;
  req.r.sdiag_family = static_cast<uint8_t>(family);
  req.r.sdiag_protocol = static_cast<uint8_t>(protocol);
  req.r.idiag_states = ~0u;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(nl.get(), &req, sizeof req, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
    return out;
  std::vector<uint8_t> buf(1 << 16);
  for (;;) {
    ssize_t n = ::recv(nl.get(), buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return out;
    int left = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, left);
         h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) return out;
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg)))
        continue;
      auto* m = static_cast<inet_diag_msg*>(NLMSG_DATA(h));
      if (m->idiag_inode != inode) continue;
      out.found = true;
      out.state = m->idiag_state;
      int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
      for (auto* a = reinterpret_cast<rtattr*>(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len))
        if (a->rta_type == INET_DIAG_SHUTDOWN && RTA_PAYLOAD(a) >= 1)
          out.shutdown = *static_cast<uint8_t*>(RTA_DATA(a));
      return out;
    }
  }
}

// Address and port of a sockaddr_in / sockaddr_in6.
std::pair<std::string, uint16_t> split(const sockaddr_storage& ss) {
  char text[INET6_ADDRSTRLEN] = "";
  if (ss.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
    ::inet_ntop(AF_INET, &a.sin_addr, text, sizeof text);
    return {text, ntohs(a.sin_port)};
  }
  const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
  ::inet_ntop(AF_INET6, &a.sin6_addr, text, sizeof text);
  return {text, ntohs(a.sin6_port)};
}

}  // namespace

image::InetSocket describe_inet_socket(int sock, int domain, int type, int protocol,
                                       const std::string& what, uint32_t& accept_queue,
                                       int& queued) {
  image::InetSocket s;
  s.family = domain;
  s.type = type;
  s.protocol = protocol;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(sock, reinterpret_cast<sockaddr*>(&ss), &len) < 0)
    throw SysError("getsockname on " + what, errno);
  std::tie(s.local, s.local_port) = split(ss);
  len = sizeof ss;
  if (::getpeername(sock, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
    std::tie(s.peer, s.peer_port) = split(ss);
  else if (errno != ENOTCONN)
    throw SysError("getpeername on " + what, errno);
  accept_queue = 0;
  queued = 0;
  s.state = s.peer.empty() ? 7 : 1;  // TCP_CLOSE, TCP_ESTABLISHED
  if (protocol == IPPROTO_TCP) {
    tcp_info info{};
    len = sizeof info;
    if (::getsockopt(sock, SOL_TCP, TCP_INFO, &info, &len) < 0)
      throw SysError("getsockopt(TCP_INFO) on " + what, errno);
    s.state = info.tcpi_state;
    if (s.state == TCP_LISTEN) {
      accept_queue = info.tcpi_unacked;  // for a listener: connections not accepted yet
      s.backlog = static_cast<int>(info.tcpi_sacked);  // and its backlog
    }
  }
  struct stat st {};
  if (::fstat(sock, &st) == 0 && (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP)) {
    InetDiag d = query_inet(domain, protocol, st.st_ino);
    if (d.found) s.shutdown = d.shutdown;
  }
  if (s.state != TCP_LISTEN && ::ioctl(sock, FIONREAD, &queued) < 0) queued = 0;
  return s;
}

}  // namespace snap
