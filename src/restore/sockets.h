// Sockets of a restored tree, made in snap before the skeletons fork:
// unix sockets bound to their names (a stale socket file of the dead job
// removed first), listening, with their queued data; IPv4/IPv6 sockets
// bound to their address and port, listening or connected (UDP); each
// with the options and the filter the job set on it.
#pragma once

#include <sys/socket.h>

#include <functional>
#include <string>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"

namespace snap::restore {

// Makes (or finds) the object of a file passed in flight; returns snap's fd of it.
using PassedFile = std::function<int(const image::FileDesc&)>;

// Sets the options and the filter of `f` on `sock`. `what` names the fd
// in errors.
// A sockaddr_in / sockaddr_in6 of `addr` and `port` (as the image writes
// them); throws naming `what` when the address does not parse.
socklen_t inet_sockaddr(int family, const std::string& addr, uint16_t port, sockaddr_storage& ss,
                        const std::string& what);
// "1.2.3.4:80" or "[::1]:80".
std::string printable(int family, const std::string& addr, uint16_t port);

// bind() of a TCP socket to `ss` (port `port`); where a connection in
// TIME_WAIT holds the port (one the job closed just before the dump, or
// the ended job's own) and the kernel refuses, waits for it to go (at most
// a minute, saying so).
// Returns bind's result (errno set).
int bind_tcp(int sock, const sockaddr_storage& ss, socklen_t len, uint16_t port,
             const std::string& what);

void set_socket_options(int sock, const image::FileDesc& f, const std::string& what);

// An AF_INET / AF_INET6 socket as `f` describes it: options, bind, listen
// or connect (datagram), shutdown. `port_shared`: other sockets of the
// image are bound to its address and port (SO_REUSEPORT).
ScopedFd make_inet_socket(const image::FileDesc& f, const std::string& what,
                          bool port_shared = false);

// What binding a unix socket to its name made.
struct BoundName {
  // A deleted name's file, moved at once to a name of its own beside it
  // (NAME's directory, ".snap-INODE"), which peers of the image connect
  // to; removed once they have. Empty: not deleted, or that name would not
  // fit in an address: then `deleted_inode` is the file's left at the name
  // (0: another file is there), for delete_socket_name.
  std::string hidden;
  uint64_t deleted_inode = 0;
  // The directories leading to a deleted name that were gone and were made
  // again for it (absolute, outermost first), for the caller to remove
  // after it.
  std::vector<std::string> made_dirs;
};

// Binds `sock` to the name of unix socket `f` (not empty), as
// make_unix_socket below does: neither listen nor queue.
void bind_unix_name(int sock, const image::FileDesc& f, const std::string& cwd,
                    const std::string& what, BoundName* bound);

// A unix socket of `f`, bound to its name (relative names under `cwd`, the
// process's working directory) and listening if it was, with the messages
// queued on it sent to it again; not connected yet. A name whose file was
// deleted before the dump is bound too (`bound` says how).
ScopedFd make_unix_socket(const image::FileDesc& f, const std::string& cwd, const std::string& what,
                          BoundName* bound, const PassedFile& passed);

// Deletes the file at `f`'s name if it is still the one with `inode`.
void delete_socket_name(const image::FileDesc& f, const std::string& cwd, uint64_t inode,
                        const std::string& what);

// Connects `sock` (of `type`) to the unix socket named `name`.
void connect_unix(int sock, const std::string& name, const std::string& cwd,
                  const std::string& what);

// A unix socket whose peer was closed before the dump: a pair whose other
// end sent `f`'s queue and was closed.
ScopedFd make_orphan_unix_socket(const image::FileDesc& f, const std::string& what,
                                 const PassedFile& passed);

// shutdown() of the directions in `mask` (1 receive, 2 send).
void shutdown_socket(int sock, int mask, const std::string& what);

// Sends `queue` from `from`, the other end of the socket that is to read it,
// with the files passed along each message (`passed` makes them). With
// `to` (the reading socket's name, relative to `cwd` where relative), a
// datagram that came from a named socket (UnixSocket::queue_senders) is
// sent from a socket bound to that name instead, where it is free.
void send_queue(int from, const image::UnixSocket& q, const std::string& what,
                const PassedFile& passed, const std::string* to = nullptr,
                const std::string& cwd = {});

}  // namespace snap::restore
