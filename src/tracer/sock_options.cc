#include "tracer/sock_options.h"

#include <arpa/inet.h>
#include <linux/filter.h>
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
    if (const InetDiag* d = diags.find(domain, protocol, st.st_ino)) s.shutdown = d->shutdown;
  }
  if (s.state != TCP_LISTEN && ::ioctl(sock, FIONREAD, &queued) < 0) queued = 0;
  return s;
}

}  // namespace snap
