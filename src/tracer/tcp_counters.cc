#include "tracer/tcp_counters.h"

#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>

namespace snap {

std::optional<TcpCounters> tcp_counters(int sock) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(sock, IPPROTO_TCP, TCP_INFO, &info, &len) < 0) return std::nullopt;
  if (len < offsetof(tcp_info, tcpi_bytes_retrans) + sizeof info.tcpi_bytes_retrans)
    return std::nullopt;
  return TcpCounters{info.tcpi_bytes_sent, info.tcpi_bytes_retrans, info.tcpi_bytes_received,
                     info.tcpi_notsent_bytes, info.tcpi_state};
}

}  // namespace snap
