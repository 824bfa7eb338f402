// Established TCP connections of a stopped tree, read in TCP repair mode
// (TCP_REPAIR, which needs CAP_NET_ADMIN): sequence numbers, options,
// window and both queues, from a copy of the job's fd (pidfd_getfd). In
// repair mode a socket sends nothing, and closing it sends neither FIN nor
// RST: with --kill the job dies with its sockets still in repair mode, so
// the peer (restored with it) never learns; otherwise they leave repair
// mode once read and the job goes on untouched. While they are read, a
// socket filter that drops everything keeps packets of a peer that still
// runs from changing them.
//
// Without CAP_NET_ADMIN, a connection whose two ends are both in the job
// is saved without repair mode: the job is stopped, so once what the kernel
// holds back is pushed out and delivered, each end's receive queue (peeked,
// nothing taken) is all there is; the restore connects the two again
// (restore/tcp_connection.h) and sends it. One with bytes that cannot go
// out (the peer's buffer is full) is refused; with --kill these
// connections end with a reset, leaving no TIME_WAIT on their ports.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"

namespace snap {

// Whether a TCP connection in `state` (TCP_INFO's) can be saved: it is
// established, or half-closed (FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING).
bool tcp_repairable_state(int state);

// "::ffff:127.0.0.1" and "127.0.0.1" are one address: the second.
std::string unmapped_address(const std::string& addr);

// A TCP socket's two ends as a key: local address and port, peer address
// and port (IPv4-mapped addresses as IPv4); `crossed`: as its peer has them.
using TcpEnds = std::tuple<std::string, uint16_t, std::string, uint16_t>;
TcpEnds tcp_ends(const image::InetSocket& s, bool crossed = false);

// Whether the other end of TCP connection `s` is a socket of `procs`
// (addresses and ports crossed; IPv4-mapped IPv6 addresses as IPv4).
bool tcp_peer_in_image(const std::vector<image::Process>& procs, const image::InetSocket& s);

class TcpRepair {
 public:
  TcpRepair() = default;
  // Puts every established (or half-closed) TCP connection of `procs` whose peer is in
  // `procs` too (any peer: `outside_peers`) into repair mode, then fills
  // its inet_socket->tcp; without CAP_NET_ADMIN, those whose peer is in
  // `procs` are saved without it (peeked). Throws Error naming pid, fd and
  // addresses when one cannot be read (no CAP_NET_ADMIN and a peer outside,
  // or bytes that cannot be delivered); the sockets touched so far leave
  // repair mode.
  static TcpRepair save(std::vector<image::Process>& procs, bool outside_peers = false);
  // Takes the sockets still held out of repair mode (SO_REUSEADDR as the
  // job had it), sending nothing: the job goes on as if never stopped.
  ~TcpRepair();
  TcpRepair(TcpRepair&& o) noexcept : held_(std::exchange(o.held_, {})) {}
  TcpRepair& operator=(TcpRepair&& o) noexcept;
  TcpRepair(const TcpRepair&) = delete;
  TcpRepair& operator=(const TcpRepair&) = delete;

  // Same as the destructor, now.
  void leave();
  // Lets go of snap's copies with the sockets still in repair mode, just
  // before the job is killed: its sockets then close without a FIN or RST
  // (those saved without repair mode with a RST, leaving no TIME_WAIT).
  void keep_for_kill();
  bool empty() const { return held_.empty(); }

 private:
  struct Held {
    ScopedFd sock;
    bool repairing = false;  // in repair mode
    bool peeked = false;     // saved without it (both ends in the job, no CAP_NET_ADMIN)
    int reuseaddr = 0;       // SO_REUSEADDR before: leaving repair mode clears it
    // A filter dropping every packet keeps the socket deaf while it is read
    // (nothing arrives, nothing is acknowledged); the job's own filter
    // (struct sock_filter[], empty: none) is put back when it goes on.
    bool deaf = false;
    std::vector<uint8_t> job_filter;
  };
  // Takes snap's filter off (the job's own goes back on).
  static void hear_again(Held& h);

  std::vector<Held> held_;
};

}  // namespace snap
