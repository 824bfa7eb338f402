// What a socket carries besides its connection: the options a job set on
// it, its classic BPF filter, and, for AF_INET / AF_INET6, its addresses
// and TCP/UDP state. All read from a copy of the job's fd (pidfd_getfd).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "image/checkpoint.h"
#include "tracer/sock_diag.h"

namespace snap {

// The options of a new socket of each kind (domain, type, protocol), read
// once per kind and kept for all the sockets of a dump: a new socket and
// ~60 getsockopt calls, which each socket had cost while the job was
// stopped.
class SocketDefaults {
 public:
  struct Kind {
    bool made = false;  // a new socket of it could be opened
    std::map<std::pair<int, int>, std::vector<uint8_t>> values;  // (level, name)
  };
  const Kind& of(int domain, int type, int protocol);

 private:
  std::map<std::tuple<int, int, int>, Kind> kinds_;
};

// The options of `sock` (of `domain`, `type`, `protocol`) whose values
// differ from those of a new socket of the same kind: what the job set.
// SO_LOCK_FILTER among them is for after the filter (set_socket_options).
std::vector<image::SockOpt> changed_socket_options(int sock, int domain, int type, int protocol,
                                                   SocketDefaults& defaults);

// "SO_MARK", "TCP_CONGESTION": an option's name for messages.
std::string socket_option_name(int level, int name);

// The classic BPF program attached to `sock` (SO_GET_FILTER), as struct
// sock_filter[]; empty when none.
std::vector<uint8_t> socket_filter(int sock, const std::string& what);

// Addresses, state, shutdown and backlog of an AF_INET / AF_INET6 socket.
// `accept_queue` gets the connections a listening TCP socket has not
// accepted yet; `queued` the bytes waiting to be read. `diags`: sock_diag's
// answers for all the sockets of a dump.
image::InetSocket describe_inet_socket(int sock, int domain, int type, int protocol,
                                       const std::string& what, InetDiags& diags,
                                       uint32_t& accept_queue, int& queued);

// "127.0.0.1:8080", "[::1]:8080".
std::string inet_address(const std::string& addr, uint16_t port, int family);

}  // namespace snap
