#include "tracer/sock_options.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
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

// Newer than some libc headers (Linux 5.7 to 6.5).
constexpr int kSoBufLock = 72;     // SO_BUF_LOCK
constexpr int kIpv6Freebind = 78;  // IPV6_FREEBIND
constexpr int kSoPassPidfd = 76;   // SO_PASSPIDFD
constexpr int kSoRcvMark = 75;     // SO_RCVMARK
constexpr int kIpLocalPortRange = 51;  // IP_LOCAL_PORT_RANGE

struct OptionId {
  int level, name;
  const char* text;
};
#define SNAP_OPT(level, name) \
  { level, name, #name }

// The options snap carries over. Each is compared with a new socket's, so
// only what the job set is recorded and set again. Left out: what the
// kernel itself changes on a socket in use (SO_INCOMING_CPU, TCP_MAXSEG,
// TCP_WINDOW_CLAMP, TCP_QUICKACK), and SO_LOCK_FILTER, handled with the
// filter (it must come after it).
constexpr OptionId kSocketOptions[] = {
    SNAP_OPT(SOL_SOCKET, SO_REUSEADDR),   SNAP_OPT(SOL_SOCKET, SO_REUSEPORT),
    SNAP_OPT(SOL_SOCKET, SO_KEEPALIVE),   SNAP_OPT(SOL_SOCKET, SO_BROADCAST),
    SNAP_OPT(SOL_SOCKET, SO_RCVBUF),      SNAP_OPT(SOL_SOCKET, SO_SNDBUF),
    SNAP_OPT(SOL_SOCKET, SO_RCVLOWAT),    SNAP_OPT(SOL_SOCKET, SO_RCVTIMEO),
    SNAP_OPT(SOL_SOCKET, SO_SNDTIMEO),    SNAP_OPT(SOL_SOCKET, SO_PRIORITY),
    SNAP_OPT(SOL_SOCKET, SO_LINGER),      SNAP_OPT(SOL_SOCKET, SO_OOBINLINE),
    SNAP_OPT(SOL_SOCKET, SO_PASSCRED),    SNAP_OPT(SOL_SOCKET, SO_TIMESTAMP),
    SNAP_OPT(SOL_SOCKET, SO_NO_CHECK),    {SOL_SOCKET, kSoBufLock, "SO_BUF_LOCK"},
    SNAP_OPT(SOL_SOCKET, SO_DONTROUTE),   SNAP_OPT(SOL_SOCKET, SO_PASSSEC),
    SNAP_OPT(SOL_SOCKET, SO_MARK),        SNAP_OPT(SOL_SOCKET, SO_BINDTODEVICE),
    SNAP_OPT(SOL_SOCKET, SO_TIMESTAMPNS), SNAP_OPT(SOL_SOCKET, SO_RXQ_OVFL),
    SNAP_OPT(SOL_SOCKET, SO_PEEK_OFF),    SNAP_OPT(SOL_SOCKET, SO_SELECT_ERR_QUEUE),
    SNAP_OPT(SOL_SOCKET, SO_BUSY_POLL),   SNAP_OPT(SOL_SOCKET, SO_ZEROCOPY),
    {SOL_SOCKET, kSoPassPidfd, "SO_PASSPIDFD"}, {SOL_SOCKET, kSoRcvMark, "SO_RCVMARK"},
};
constexpr OptionId kIpOptions[] = {
    SNAP_OPT(SOL_IP, IP_FREEBIND),       SNAP_OPT(SOL_IP, IP_TOS),
    SNAP_OPT(SOL_IP, IP_TTL),            SNAP_OPT(SOL_IP, IP_RECVERR),
    SNAP_OPT(SOL_IP, IP_PKTINFO),        SNAP_OPT(SOL_IP, IP_MTU_DISCOVER),
    SNAP_OPT(SOL_IP, IP_OPTIONS),        SNAP_OPT(SOL_IP, IP_RECVOPTS),
    SNAP_OPT(SOL_IP, IP_RETOPTS),        SNAP_OPT(SOL_IP, IP_RECVTTL),
    SNAP_OPT(SOL_IP, IP_RECVTOS),        SNAP_OPT(SOL_IP, IP_MINTTL),
    SNAP_OPT(SOL_IP, IP_NODEFRAG),       SNAP_OPT(SOL_IP, IP_TRANSPARENT),
    SNAP_OPT(SOL_IP, IP_RECVORIGDSTADDR), SNAP_OPT(SOL_IP, IP_BIND_ADDRESS_NO_PORT),
    {SOL_IP, kIpLocalPortRange, "IP_LOCAL_PORT_RANGE"},
};
constexpr OptionId kIpv6Options[] = {
    SNAP_OPT(SOL_IPV6, IPV6_V6ONLY),         SNAP_OPT(SOL_IPV6, IPV6_UNICAST_HOPS),
    SNAP_OPT(SOL_IPV6, IPV6_RECVPKTINFO),    {SOL_IPV6, kIpv6Freebind, "IPV6_FREEBIND"},
    SNAP_OPT(SOL_IPV6, IPV6_RECVHOPLIMIT),
    SNAP_OPT(SOL_IPV6, IPV6_RECVTCLASS),     SNAP_OPT(SOL_IPV6, IPV6_TCLASS),
    SNAP_OPT(SOL_IPV6, IPV6_MTU_DISCOVER),   SNAP_OPT(SOL_IPV6, IPV6_RECVERR),
    SNAP_OPT(SOL_IPV6, IPV6_DONTFRAG),       SNAP_OPT(SOL_IPV6, IPV6_TRANSPARENT),
    SNAP_OPT(SOL_IPV6, IPV6_AUTOFLOWLABEL),  SNAP_OPT(SOL_IPV6, IPV6_RECVORIGDSTADDR),
    SNAP_OPT(SOL_IPV6, IPV6_MINHOPCOUNT),
};
// Multicast, for datagram sockets only: a stream socket refuses them, and
// an accepted TCP socket reads the TTL of the peer's SYN as its own.
constexpr OptionId kIpMulticastOptions[] = {
    SNAP_OPT(SOL_IP, IP_MULTICAST_IF),   SNAP_OPT(SOL_IP, IP_MULTICAST_TTL),
    SNAP_OPT(SOL_IP, IP_MULTICAST_LOOP), SNAP_OPT(SOL_IP, IP_MULTICAST_ALL),
};
constexpr OptionId kIpv6MulticastOptions[] = {
    SNAP_OPT(SOL_IPV6, IPV6_MULTICAST_HOPS), SNAP_OPT(SOL_IPV6, IPV6_MULTICAST_LOOP),
    SNAP_OPT(SOL_IPV6, IPV6_MULTICAST_IF),
};
constexpr OptionId kTcpOptions[] = {
    SNAP_OPT(SOL_TCP, TCP_NODELAY),       SNAP_OPT(SOL_TCP, TCP_KEEPIDLE),
    SNAP_OPT(SOL_TCP, TCP_KEEPINTVL),     SNAP_OPT(SOL_TCP, TCP_KEEPCNT),
    SNAP_OPT(SOL_TCP, TCP_USER_TIMEOUT),  SNAP_OPT(SOL_TCP, TCP_DEFER_ACCEPT),
    SNAP_OPT(SOL_TCP, TCP_CORK),          SNAP_OPT(SOL_TCP, TCP_SYNCNT),
    SNAP_OPT(SOL_TCP, TCP_LINGER2),       SNAP_OPT(SOL_TCP, TCP_CONGESTION),
    SNAP_OPT(SOL_TCP, TCP_NOTSENT_LOWAT), SNAP_OPT(SOL_TCP, TCP_THIN_LINEAR_TIMEOUTS),
    SNAP_OPT(SOL_TCP, TCP_FASTOPEN),      SNAP_OPT(SOL_TCP, TCP_FASTOPEN_CONNECT),
    SNAP_OPT(SOL_TCP, TCP_INQ),
};
constexpr OptionId kUdpOptions[] = {
    SNAP_OPT(SOL_UDP, UDP_SEGMENT),
    SNAP_OPT(SOL_UDP, UDP_GRO),
};
#undef SNAP_OPT

bool read_option(int sock, OptionId id, std::vector<uint8_t>& out) {
  uint8_t buf[64];
  socklen_t len = sizeof buf;
  if (::getsockopt(sock, id.level, id.name, buf, &len) < 0) return false;
  out.assign(buf, buf + len);
  return true;
}

// Calls fn(ids) for each table of options a socket of this kind has.
template <typename Fn>
void for_each_table(int domain, int type, int protocol, Fn fn) {
  const bool inet = domain == AF_INET || domain == AF_INET6;
  fn(kSocketOptions);
  if (inet) fn(kIpOptions);
  if (domain == AF_INET6) fn(kIpv6Options);
  if (inet && type != SOCK_STREAM) fn(kIpMulticastOptions);
  if (domain == AF_INET6 && type != SOCK_STREAM) fn(kIpv6MulticastOptions);
  if (inet && protocol == IPPROTO_TCP) fn(kTcpOptions);
  if (inet && protocol == IPPROTO_UDP) fn(kUdpOptions);
}

}  // namespace

const SocketDefaults::Kind& SocketDefaults::of(int domain, int type, int protocol) {
  auto [it, added] = kinds_.try_emplace({domain, type, protocol});
  if (!added) return it->second;
  // A new socket of the same kind has the defaults; without one (say, a
  // ping socket this user may not open) nothing is recorded.
  ScopedFd fresh(::socket(domain, type | SOCK_CLOEXEC, protocol));
  if (!fresh) {
    vlog("cannot open a socket ({}, {}, {}) to compare options with: {}", domain, type, protocol,
         std::strerror(errno));
    return it->second;
  }
  Kind& k = it->second;
  k.made = true;
  for_each_table(domain, type, protocol, [&](const auto& ids) {
    for (const auto& id : ids) {
      std::vector<uint8_t> value;
      if (read_option(fresh.get(), id, value)) k.values[{id.level, id.name}] = std::move(value);
    }
  });
  return k;
}

std::vector<image::SockOpt> changed_socket_options(int sock, int domain, int type, int protocol,
                                                   SocketDefaults& defaults) {
  std::vector<image::SockOpt> out;
  const SocketDefaults::Kind& fresh = defaults.of(domain, type, protocol);
  if (!fresh.made) return out;
  for_each_table(domain, type, protocol, [&](const auto& ids) {
    for (const auto& id : ids) {
      std::vector<uint8_t> mine;
      if (!read_option(sock, id, mine)) continue;  // not an option of this socket
      auto it = fresh.values.find({id.level, id.name});
      if (it != fresh.values.end() && it->second == mine) continue;
      out.push_back({id.level, id.name, std::move(mine)});
    }
  });
  std::vector<uint8_t> locked;
  if (read_option(sock, {SOL_SOCKET, SO_LOCK_FILTER, "SO_LOCK_FILTER"}, locked) &&
      locked != std::vector<uint8_t>(locked.size(), 0))
    out.push_back({SOL_SOCKET, SO_LOCK_FILTER, std::move(locked)});
  return out;
}

std::string socket_option_name(int level, int name) {
  auto find = [&](const auto& ids) -> const char* {
    for (const auto& id : ids)
      if (id.level == level && id.name == name) return id.text;
    return nullptr;
  };
  for (const char* text : {find(kSocketOptions), find(kIpOptions), find(kIpv6Options),
                           find(kIpMulticastOptions), find(kIpv6MulticastOptions),
                           find(kTcpOptions), find(kUdpOptions)})
    if (text) return text;
  if (level == SOL_SOCKET && name == SO_LOCK_FILTER) return "SO_LOCK_FILTER";
  return fmt::format("option {} of level {}", name, level);
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
                                       const std::string& what, InetDiags& diags,
                                       uint32_t& accept_queue, int& queued) {
  image::InetSocket s;
  s.family = domain;
  s.type = type;
  s.protocol = protocol;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(sock, reinterpret_cast<sockaddr*>(&ss), &len) < 0)
    throw SysError("getsockname on " + what, errno);
  std::tie(s.local, s.local_port) = split(ss);
  const sockaddr_storage local = ss;
  len = sizeof ss;
  const bool connected = ::getpeername(sock, reinterpret_cast<sockaddr*>(&ss), &len) == 0;
  if (connected)
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
    const InetDiag* d = diags.find(domain, protocol, st.st_ino, &local, connected ? &ss : nullptr);
    if (d) s.shutdown = d->shutdown;
  }
  if (s.state != TCP_LISTEN && ::ioctl(sock, FIONREAD, &queued) < 0) queued = 0;
  return s;
}

}  // namespace snap
