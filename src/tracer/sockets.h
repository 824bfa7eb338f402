// Unix sockets of a stopped tree: what sock_diag says about each (type,
// state, peer, bound name, queue length) and the data queued on it, read
// without consuming it from a copy of the target's fd (pidfd_getfd).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"

namespace snap {

// One socket of a NETLINK_SOCK_DIAG dump of AF_UNIX sockets.
struct UnixDiag {
  uint64_t inode = 0;
  int type = 0;   // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
  int state = 0;  // TCP_ESTABLISHED (1), TCP_CLOSE (7), TCP_LISTEN (10)
  uint64_t peer_inode = 0;
  std::string name;  // path, "@abstract", or empty
  // UNIX_DIAG_RQLEN: stream/seqpacket: bytes queued; dgram: length of the
  // first message; listening: connections waiting to be accepted.
  bool has_rqlen = false;
  uint32_t rqueue = 0, wqueue = 0;  // listening: wqueue is the backlog
  int shutdown = 0;                 // UNIX_DIAG_SHUTDOWN: sk_shutdown
  uint64_t vfs_inode = 0;           // UNIX_DIAG_VFS: inode of the bound socket file
  // UNIX_DIAG_ICONS (listening): per connection not yet accepted, the
  // inode of the socket that connected (0: it was closed), in accept order.
  std::vector<uint64_t> icons;
};

// Parses one buffer of netlink messages answering a unix_diag_req dump
// (UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_ICONS). Appends the
// sockets to `out`; returns true at NLMSG_DONE. Throws Error on
// NLMSG_ERROR or a malformed message.
bool parse_unix_diag(const uint8_t* buf, size_t len, std::vector<UnixDiag>& out);

// Every unix socket in snap's network namespace, by inode.
std::map<uint64_t, UnixDiag> query_unix_sockets();

// The data queued for reading on unix socket `sock` of type `type`, one
// entry per message (stream: one entry, or none when empty), oldest first,
// read with MSG_PEEK from SO_PEEK_OFF 0 (the socket's peek offset is set
// back afterwards). Throws Error, naming `what`, when something queued
// cannot be captured: passed fds (SCM_RIGHTS), a zero-length message.
// `shut_for_reading`: the socket has RCV_SHUTDOWN, so a read of 0 bytes at
// the end of the queue is end of file, not a message (one in the middle
// shows as a byte count short of sock_diag's).
// `passed` (datagram and seqpacket sockets): gets the files passed with
// each message (SCM_RIGHTS), as fds of snap's, instead of a refusal.
// `senders` (datagram sockets): gets the name of the socket each message
// came from ("@name", a path, or "" where it had none).
std::vector<std::vector<uint8_t>> peek_unix_queue(
    int sock, int type, const std::string& what, bool shut_for_reading = false,
    std::vector<std::vector<ScopedFd>>* passed = nullptr,
    std::vector<std::string>* senders = nullptr);

// A copy of fd `fd` of process `pid` (pidfd_getfd): the same open file.
ScopedFd copy_target_fd(pid_t pid, int fd);

// Fills FileDesc::unix_socket or inet_socket, sock_options and sock_filter
// of every socket fd of the (stopped) processes. Throws Error naming pid,
// fd and socket when a socket's queue cannot be captured completely.
void collect_sockets(std::vector<image::Process>& procs);

// Refuses (Error naming pid, fd, the socket and its addresses) a dump with
// a socket restore could not bring back: a TCP connection whose peer is
// outside the image or that is not established (established ones with
// both ends in the image are saved by TcpRepair), a unix stream
// connected to a process outside the image, a socket of another family.
// Sockets that are the root's stdio are snap restore's own and pass.
// `tcp_established`: established TCP connections to a peer outside pass too.
// `tcp_close`: TCP connections to a peer outside pass in any state (they
// are saved as closed: mark_closed_outside_connections).
void check_sockets_restorable(const std::vector<image::Process>& procs,
                              bool tcp_established = false, bool tcp_close = false);

// The inodes of the sockets that are the root's (procs[0]) stdio: snap
// restore's own at restore, left alone by the dump.
std::set<uint64_t> root_stdio_sockets(const std::vector<image::Process>& procs);

// Marks every TCP connection of the processes whose peer is outside them
// and that was not saved whole (InetSocket::tcp) as closed
// (InetSocket::closed): restore makes it a socket shut down both ways. The
// root's stdio is left alone (snap restore's own).
void mark_closed_outside_connections(std::vector<image::Process>& procs);

}  // namespace snap
