// What a socket carries besides its connection: the options a job set on
// it, its classic BPF filter, and, for AF_INET / AF_INET6, its addresses
// and TCP/UDP state. All read from a copy of the job's fd (pidfd_getfd).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "image/checkpoint.h"
#include "tracer/sock_diag.h"

namespace snap {

// The options of `sock` (of `domain`, `type`, `protocol`) whose values
// differ from those of a new socket of the same kind: what the job set.
// SO_LOCK_FILTER among them is for after the filter (set_socket_options).
std::vector<image::SockOpt> changed_socket_options(int sock, int domain, int type, int protocol);

// "SO_MARK", "TCP_CONGESTION": an option's name for messages.
std::string socket_option_name(int level, int name);

// The classic BPF program attached to `sock` (SO_GET_FILTER), as struct
// sock_filter[]; empty when none.
std::vector<uint8_t> socket_filter(int sock, const std::string& what);

// Addresses, state, shutdown and backlog of an AF_INET / AF_INET6 socket.
// `accept_queue` gets the connections a listening TCP socket has not
// accepted yet; `queued` the bytes waiting to be read. `diags`: sock_diag's
// answers, one dump per family and protocol for all the sockets of a dump.
image::InetSocket describe_inet_socket(int sock, int domain, int type, int protocol,
                                       const std::string& what, InetDiags& diags,
                                       uint32_t& accept_queue, int& queued);

// "127.0.0.1:8080", "[::1]:8080".
std::string inet_address(const std::string& addr, uint16_t port, int family);

}  // namespace snap
