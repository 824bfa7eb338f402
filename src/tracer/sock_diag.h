// NETLINK_SOCK_DIAG dumps: one request, every answer buffer handed to a
// parser until NLMSG_DONE. Used once per family (and protocol) during the
// freeze, the sockets then looked up by inode; a TCP socket is asked for
// alone first (InetDiags).
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace snap {

// Sends the request `req` (nlmsghdr + family's request, `len` bytes) on a
// new NETLINK_SOCK_DIAG socket and calls `parse` on each answer buffer
// until it returns true (it saw NLMSG_DONE). `what` names the dump in errors.
void sock_diag_dump(const void* req, size_t len, const std::string& what,
                    const std::function<bool(const uint8_t* buf, size_t len)>& parse);

// Walks the netlink messages of one answer buffer: `message` gets the body
// of each SOCK_DIAG_BY_FAMILY message. True at NLMSG_DONE; throws Error on
// NLMSG_ERROR (naming `what`) or a malformed message.
bool for_each_diag_message(const uint8_t* buf, size_t len, const char* what,
                           const std::function<void(const uint8_t* body, size_t len)>& message);
// Walks the attributes of a message body from offset `from`: `attr` gets
// each one's type and payload. Throws Error naming `inode` on a malformed one.
void for_each_diag_attr(const uint8_t* body, size_t len, size_t from, uint64_t inode,
                        const std::function<void(uint16_t type, const uint8_t* data,
                                                 size_t len)>& attr);

// sock_diag's view of one TCP or UDP socket.
struct InetDiag {
  uint64_t inode = 0;
  int state = 0, shutdown = 0;  // idiag_state; INET_DIAG_SHUTDOWN (sk_shutdown)
};

// Parses one answer buffer of an inet_diag_req_v2 dump into `out` (by
// inode); returns true at NLMSG_DONE. Throws Error on NLMSG_ERROR or a
// malformed message.
bool parse_inet_diag(const uint8_t* buf, size_t len, std::map<uint64_t, InetDiag>& out);

// The sockets of `family` (AF_INET, AF_INET6) and `protocol` (IPPROTO_TCP,
// IPPROTO_UDP), by inode, dumped once and kept; empty when sock_diag
// cannot answer (no diag module for the protocol).
class InetDiags {
 public:
  // With `local` (its getsockname) and `peer` (its getpeername, or null),
  // a TCP socket is asked for alone, by its addresses: a dump walks every
  // bucket of the kernel's TCP hash tables (~1.5 ms a family here, with
  // almost no sockets), a lookup one. Not found so (a socket that is in no
  // table, a listener among others on its port): from the dump.
  const InetDiag* find(int family, int protocol, uint64_t inode,
                       const sockaddr_storage* local = nullptr,
                       const sockaddr_storage* peer = nullptr);

 private:
  const InetDiag* from_dump(int family, int protocol, uint64_t inode);

  std::map<std::pair<int, int>, std::map<uint64_t, InetDiag>> dumps_;
  std::map<uint64_t, InetDiag> looked_up_;
};

}  // namespace snap
