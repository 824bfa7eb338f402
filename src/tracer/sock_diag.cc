#include "tracer/sock_diag.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <sys/socket.h>

#include <netinet/in.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include <fmt/core.h>

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

namespace {

// The inet_diag id of a socket at `local` connected to `peer` (or to none).
void fill_id(inet_diag_sockid& id, const sockaddr_storage& local, const sockaddr_storage* peer) {
  auto put = [](const sockaddr_storage& ss, __be16& port, __be32 (&addr)[4]) {
    if (ss.ss_family == AF_INET) {
      const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
      port = a.sin_port;
      std::memcpy(&addr[0], &a.sin_addr, sizeof a.sin_addr);
    } else {
      const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
      port = a.sin6_port;
      std::memcpy(addr, &a.sin6_addr, sizeof a.sin6_addr);
    }
  };
  put(local, id.idiag_sport, id.idiag_src);
  if (peer) put(*peer, id.idiag_dport, id.idiag_dst);
  id.idiag_cookie[0] = id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
}

// An inet_diag request for sockets of `family` and `protocol` in every
// state, with netlink `flags`.
struct InetRequest {
  nlmsghdr h;
  inet_diag_req_v2 r;
};
InetRequest inet_request(int family, int protocol, uint16_t flags) {
  InetRequest req{};
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.h.nlmsg_flags = flags;
  req.h.nlmsg_seq = 1;
  req.r.sdiag_family = static_cast<uint8_t>(family);
  req.r.sdiag_protocol = static_cast<uint8_t>(protocol);
  req.r.idiag_states = ~0u;
  return req;
}

// One socket, asked for by its id: its answer, or nothing where sock_diag
// finds none (ENOENT) or cannot answer.
std::optional<InetDiag> query_one(int family, int protocol, const sockaddr_storage& local,
                                  const sockaddr_storage* peer) {
  InetRequest req = inet_request(family, protocol, NLM_F_REQUEST);
  fill_id(req.r.id, local, peer);
  ScopedFd nl(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!nl) return std::nullopt;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(nl.get(), &req, sizeof req, 0, reinterpret_cast<sockaddr*>(&kernel),
               sizeof kernel) < 0)
    return std::nullopt;
  std::vector<uint8_t> buf(8192);
  ssize_t n;
  do n = ::recv(nl.get(), buf.data(), buf.size(), 0);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return std::nullopt;
  std::map<uint64_t, InetDiag> got;
  try {
    parse_inet_diag(buf.data(), static_cast<size_t>(n), got);
  } catch (const Error&) {
    return std::nullopt;  // ENOENT: in no table, or not this way
  }
  if (got.size() != 1) return std::nullopt;
  return got.begin()->second;
}

}  // namespace

const InetDiag* InetDiags::find(int family, int protocol, uint64_t inode,
                                const sockaddr_storage* local, const sockaddr_storage* peer) {
  if (local && protocol == IPPROTO_TCP && local->ss_family == family) {
    if (auto it = looked_up_.find(inode); it != looked_up_.end()) return &it->second;
    if (auto d = query_one(family, protocol, *local, peer); d && d->inode == inode)
      return &(looked_up_[inode] = *d);
  }
  return from_dump(family, protocol, inode);
}

const InetDiag* InetDiags::from_dump(int family, int protocol, uint64_t inode) {
  auto key = std::make_pair(family, protocol);
  auto it = dumps_.find(key);
  if (it == dumps_.end()) {
    it = dumps_.emplace(key, std::map<uint64_t, InetDiag>{}).first;
    const InetRequest req = inet_request(family, protocol, NLM_F_REQUEST | NLM_F_DUMP);
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
