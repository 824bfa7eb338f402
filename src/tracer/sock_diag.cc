#include "tracer/sock_diag.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <sys/socket.h>

#include <cstring>
#include <fmt/core.h>
#include <vector>

#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"

namespace snap {

void sock_diag_dump(const void* req, size_t len, const std::string& what,
                    const std::function<bool(const uint8_t* buf, size_t len)>& parse) {
  ScopedFd nl(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!nl) throw SysError("socket(AF_NETLINK, NETLINK_SOCK_DIAG) for " + what, errno);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(nl.get(), req, len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
    throw SysError("send of the sock_diag request for " + what, errno);
  std::vector<uint8_t> buf(1 << 16);
  for (bool done = false; !done;) {
    ssize_t n = ::recv(nl.get(), buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw SysError("recv of the sock_diag answer for " + what, errno);
    if (n == 0) throw Error("sock_diag: the answer for " + what + " ended without NLMSG_DONE");
    done = parse(buf.data(), static_cast<size_t>(n));
  }
}

bool for_each_diag_message(const uint8_t* buf, size_t len, const char* what,
                           const std::function<void(const uint8_t* body, size_t len)>& message) {
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
      int32_t err = -EPROTO;
      if (body_len >= sizeof err) std::memcpy(&err, body, sizeof err);
      throw SysError(fmt::format("sock_diag dump of {}", what), -err);
    }
    if (h.nlmsg_type == SOCK_DIAG_BY_FAMILY) message(body, body_len);
  }
  return false;
}

void for_each_diag_attr(const uint8_t* body, size_t len, size_t from, uint64_t inode,
                        const std::function<void(uint16_t type, const uint8_t* data,
                                                 size_t len)>& attr) {
  for (size_t a = from; a + sizeof(rtattr) <= len;) {
    rtattr ra;
    std::memcpy(&ra, body + a, sizeof ra);
    if (ra.rta_len < sizeof ra || a + ra.rta_len > len)
      throw Error(fmt::format("sock_diag: malformed attribute of socket {}", inode));
    attr(ra.rta_type, body + a + RTA_LENGTH(0), ra.rta_len - RTA_LENGTH(0));
    a += RTA_ALIGN(ra.rta_len);
  }
}

bool parse_inet_diag(const uint8_t* buf, size_t len, std::map<uint64_t, InetDiag>& out) {
  return for_each_diag_message(buf, len, "inet sockets", [&](const uint8_t* body, size_t body_len) {
    if (body_len < sizeof(inet_diag_msg))
      throw Error(fmt::format("sock_diag: short inet_diag_msg ({} bytes)", body_len));
    inet_diag_msg m;
    std::memcpy(&m, body, sizeof m);
    InetDiag d;
    d.inode = m.idiag_inode;
    d.state = m.idiag_state;
    for_each_diag_attr(body, body_len, NLMSG_ALIGN(sizeof m), d.inode,
                       [&](uint16_t type, const uint8_t* data, size_t n) {
                         if (type == INET_DIAG_SHUTDOWN && n > 0) d.shutdown = data[0];
                       });
    out[d.inode] = d;
  });
}

const InetDiag* InetDiags::find(int family, int protocol, uint64_t inode) {
  auto key = std::make_pair(family, protocol);
  auto it = dumps_.find(key);
  if (it == dumps_.end()) {
    it = dumps_.emplace(key, std::map<uint64_t, InetDiag>{}).first;
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
    const std::string what = fmt::format("sockets of family {} protocol {}", family, protocol);
    std::map<uint64_t, InetDiag> all;
    try {
      sock_diag_dump(&req, sizeof req, what,
                     [&](const uint8_t* buf, size_t len) { return parse_inet_diag(buf, len, all); });
      it->second = std::move(all);
    } catch (const Error& e) {
      // No diag module for the protocol: shutdown states stay unknown.
      vlog("sock_diag cannot list {}: {}", what, e.what());
    }
  }
  auto found = it->second.find(inode);
  return found == it->second.end() ? nullptr : &found->second;
}

}  // namespace snap
