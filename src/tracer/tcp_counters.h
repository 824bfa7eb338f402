// A TCP socket's byte counters (TCP_INFO as Linux 4.19 has it; glibc's
// struct tcp_info stops short of them): what it sent, sent again and
// received in order since it was connected.
#pragma once

#include <cstdint>
#include <optional>

namespace snap {

struct TcpCounters {
  uint64_t sent = 0;      // data bytes sent, retransmissions included
  uint64_t retrans = 0;   // of those, sent again
  uint64_t received = 0;  // bytes received in order (the receive queue's), a FIN counting one
  uint32_t notsent = 0;   // written by the job, not sent yet
  int state = 0;          // TCP state (1 established, 5 FIN_WAIT2, ...)
  // Distinct bytes sent.
  uint64_t delivered_out() const { return sent - retrans; }
};

// nullopt where the kernel's TCP_INFO is too old to have them.
std::optional<TcpCounters> tcp_counters(int sock);

}  // namespace snap
