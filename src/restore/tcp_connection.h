// Established TCP connections saved in repair mode (image::TcpConnection),
// made again in two steps: each socket in repair mode first (bound,
// "connected" without a packet, sequence numbers, options, queued data and
// window as saved), then, once every socket of the image exists so that its
// peer is there to answer, out of repair mode.
#pragma once

#include <string>
#include <utility>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"

namespace snap::restore {

// The socket of `f` (inet_socket with tcp), still in repair mode. Needs
// CAP_NET_ADMIN. `what` names the fd in errors.
ScopedFd make_tcp_connection(const image::FileDesc& f, const std::string& what);

// Two sockets of the image connected to each other, saved without repair
// mode (image::TcpConnection::peeked): connected again at their own
// addresses (`server`'s address listened on for a moment, `client` bound to
// its own and connecting), each one's unread data sent by the other, and
// shut down as they were. Returns {client's socket, server's}. Needs the
// addresses free: fails (EADDRINUSE) while the checkpointed job still holds
// them. `what` names the client's fd in errors.
std::pair<ScopedFd, ScopedFd> make_tcp_pair(const image::FileDesc& client,
                                            const image::FileDesc& server, const std::string& what);

// The socket of `f` as a connection that was closed (restore --tcp-close):
// unconnected, shut down both ways, so reads see end of file and writes EPIPE.
ScopedFd make_closed_tcp_connection(const image::FileDesc& f, const std::string& what);

// Takes the socket out of repair mode (the kernel then sends a window
// probe to the peer) and sets SO_REUSEADDR as the job had it.
void leave_tcp_repair(int sock, const image::FileDesc& f, const std::string& what);

// Then, once every connection of the image left repair mode: sends the
// data that was never sent, sets the buffer sizes the job set, and shuts
// the socket down as it was (a half-closed connection sends its FIN again).
void finish_tcp_connection(int sock, const image::FileDesc& f, const std::string& what);

}  // namespace snap::restore
