#include "restore/sockets.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>
#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "tracer/sock_options.h"

namespace snap::restore {

namespace {

constexpr int kListen = 10;  // TCP_LISTEN, as sock_diag and TCP_INFO say

// A unix socket address for "@abstract" or a path.
struct UnixAddress {
  sockaddr_un sun{};
  socklen_t len = 0;
};

UnixAddress unix_address(const std::string& name, const std::string& what) {
  UnixAddress a;
  a.sun.sun_family = AF_UNIX;
  if (name.size() > sizeof a.sun.sun_path - (name[0] == '@' ? 0 : 1))
    throw Error(fmt::format("{}: the socket name {} is too long", what, name));
  std::memcpy(a.sun.sun_path, name.data(), name.size());
  if (name[0] == '@') a.sun.sun_path[0] = '\0';
  a.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() +
                                 (name[0] == '@' ? 0 : 1));
  return a;
}

bool is_path(const std::string& name) { return !name.empty() && name[0] != '@'; }

// Works in `dir` while it lives, for names relative to a process's
// working directory; snap's own is restored afterwards.
class InDirectory {
 public:
  InDirectory(const std::string& name, const std::string& dir, const std::string& what) {
    if (!is_path(name) || name[0] == '/' || dir.empty()) return;
    old_.reset(::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!old_) throw SysError("open of snap's working directory", errno);
    if (::chdir(dir.c_str()) < 0)
      throw SysError(fmt::format("cannot restore {}: chdir {} to bind {}", what, dir, name), errno);
  }
  ~InDirectory() {
    if (old_) (void)::fchdir(old_.get());
  }
  InDirectory(const InDirectory&) = delete;
  InDirectory& operator=(const InDirectory&) = delete;

 private:
  ScopedFd old_;
};

// Whether `path` is a socket file no socket answers on (left by a process
// that is gone).
bool stale_socket_file(const std::string& path, int type, const std::string& what) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  ScopedFd probe(::socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe) throw SysError("socket(AF_UNIX) to probe " + path, errno);
  UnixAddress a = unix_address(path, what);
  return ::connect(probe.get(), reinterpret_cast<sockaddr*>(&a.sun), a.len) < 0 &&
         errno == ECONNREFUSED;
}

// A socket file left at `path` by the checkpointed job, which is gone, is
// removed; one that something still answers on is not.
void clear_stale_socket_file(const std::string& path, int type, const std::string& what) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (!S_ISSOCK(st.st_mode))
    throw Error(fmt::format("cannot restore {}: {} is in the way of its socket, and is not a "
                            "socket file",
                            what, path),
                "move that file away and restore again");
  if (!stale_socket_file(path, type, what))
    throw Error(fmt::format("cannot restore {}: a live socket answers at {}", what, path),
                "another process (a restored copy of this job?) listens there; stop it first");
  if (::unlink(path.c_str()) < 0 && errno != ENOENT)
    throw SysError(fmt::format("cannot restore {}: unlink of the stale socket file {}", what, path),
                   errno);
}

void set_option(int sock, const image::SockOpt& o, const std::string& what) {
  std::vector<uint8_t> value = o.value;
  // The kernel doubles the buffer sizes it is given, and reports the doubled value.
  if (o.level == SOL_SOCKET && (o.name == SO_RCVBUF || o.name == SO_SNDBUF) &&
      value.size() == sizeof(int)) {
    int v;
    std::memcpy(&v, value.data(), sizeof v);
    v /= 2;
    std::memcpy(value.data(), &v, sizeof v);
  }
  if (::setsockopt(sock, o.level, o.name, value.data(), static_cast<socklen_t>(value.size())) < 0)
    throw SysError(fmt::format("cannot restore {}: setsockopt({})", what,
                               socket_option_name(o.level, o.name)),
                   errno,
                   errno == EPERM ? "the job had a privilege this restore lacks (SO_MARK, for "
                                    "one, needs CAP_NET_ADMIN): restore as the user who could set it"
                                  : "");
}

// Whether a TCP connection in TIME_WAIT has local port `port` (in this
// network namespace: /proc/net/tcp and tcp6, state 06).
bool time_wait_on(uint16_t port) {
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state;
      if (!(fields >> slot >> local >> remote >> state)) continue;
      auto colon = local.rfind(':');
      if (colon == std::string::npos) continue;
      if (state == "06" && std::stoul(local.substr(colon + 1), nullptr, 16) == port) return true;
    }
  }
  return false;
}

}  // namespace

int bind_tcp(int sock, const sockaddr_storage& ss, socklen_t len, uint16_t port,
             const std::string& what) {
  int rc = ::bind(sock, reinterpret_cast<const sockaddr*>(&ss), len);
  // A connection closed lately lingers on the port (TIME_WAIT, a minute):
  // one the job closed just before the dump, or, after a leave-running
  // dump, the ended job's own. Where its socket did not allow reuse, no
  // bind can, without CAP_NET_ADMIN. Nothing of the job runs yet: wait.
  // The TIME_WAIT may end between a refused bind and the look at
  // /proc/net/tcp that follows it: where none lingers any more, bind once
  // more before giving up.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(65);
  bool said = false;
  bool lingering = true;
  while (rc < 0 && errno == EADDRINUSE && lingering &&
         std::chrono::steady_clock::now() < give_up) {
    lingering = time_wait_on(port);
    if (lingering) {
      if (!said)
        warn("{}: port {} is held by a connection closed lately (TIME_WAIT: one the job closed "
             "before the checkpoint, or the checkpointed job's own, if it ended since); waiting "
             "for the kernel to free it (at most a minute)",
             what, port);
      said = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    rc = ::bind(sock, reinterpret_cast<const sockaddr*>(&ss), len);
  }
  return rc;
}

socklen_t inet_sockaddr(int family, const std::string& addr, uint16_t port, sockaddr_storage& ss,
                        const std::string& what) {
  ss = {};
  if (family == AF_INET) {
    auto& a = reinterpret_cast<sockaddr_in&>(ss);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (::inet_pton(AF_INET, addr.c_str(), &a.sin_addr) != 1)
      throw Error(fmt::format("{}: bad IPv4 address \"{}\" in the image", what, addr));
    return sizeof a;
  }
  auto& a = reinterpret_cast<sockaddr_in6&>(ss);
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(port);
  if (::inet_pton(AF_INET6, addr.c_str(), &a.sin6_addr) != 1)
    throw Error(fmt::format("{}: bad IPv6 address \"{}\" in the image", what, addr));
  return sizeof a;
}

std::string printable(int family, const std::string& addr, uint16_t port) {
  return family == AF_INET6 ? fmt::format("[{}]:{}", addr, port) : fmt::format("{}:{}", addr, port);
}

namespace {

// The job's classic BPF filter, attached again.
void attach_filter(int sock, const image::FileDesc& f, const std::string& what) {
  if (f.sock_filter.empty()) return;
  if (f.sock_filter.size() % sizeof(sock_filter))
    throw Error(fmt::format("{}: the socket filter in the image is {} bytes, not whole "
                            "instructions", what, f.sock_filter.size()));
  std::vector<sock_filter> prog(f.sock_filter.size() / sizeof(sock_filter));
  std::memcpy(prog.data(), f.sock_filter.data(), f.sock_filter.size());
  sock_fprog fprog{static_cast<unsigned short>(prog.size()), prog.data()};
  if (::setsockopt(sock, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) < 0)
    throw SysError(fmt::format("cannot restore {}: setsockopt(SO_ATTACH_FILTER, {} instructions)",
                               what, prog.size()),
                   errno);
}

}  // namespace

void set_socket_options(int sock, const image::FileDesc& f, const std::string& what) {
  auto is_lock = [](const image::SockOpt& o) {
    return o.level == SOL_SOCKET && o.name == SO_LOCK_FILTER;
  };
  for (const auto& o : f.sock_options)
    if (!is_lock(o)) set_option(sock, o, what);
  attach_filter(sock, f, what);
  for (const auto& o : f.sock_options)  // the filter may not change afterwards
    if (is_lock(o)) set_option(sock, o, what);
}

void shutdown_socket(int sock, int mask, const std::string& what) {
  if (!(mask & 3)) return;
  // SHUT_RD 0, SHUT_WR 1, SHUT_RDWR 2; an unconnected socket says
  // ENOTCONN but is shut down all the same.
  if (::shutdown(sock, (mask & 3) - 1) < 0 && errno != ENOTCONN)
    throw SysError(fmt::format("cannot restore {}: shutdown({})", what, (mask & 3) - 1), errno);
}

namespace {

// A socket bound to `name` (a datagram's sender), or none where the name
// is taken now (a socket holds it, a file other than a stale socket file is
// at that path). `made`: the inode of the socket file the bind made where
// the path was free, for the caller to remove again; a stale socket file
// (the checkpointed sender's, say) is replaced, and the new one left there.
ScopedFd bind_sender(int type, const std::string& name, const std::string& what,
                     std::optional<ino_t>* made) {
  UnixAddress a = unix_address(name, what);
  ScopedFd sock(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
  if (!sock) throw SysError(fmt::format("cannot restore {}: socket(AF_UNIX, {})", what, type), errno);
  bool replaced = false;
  int rc = ::bind(sock.get(), reinterpret_cast<sockaddr*>(&a.sun), a.len);
  if (rc < 0 && errno == EADDRINUSE && is_path(name) && stale_socket_file(name, type, what) &&
      ::unlink(name.c_str()) == 0) {
    replaced = true;
    rc = ::bind(sock.get(), reinterpret_cast<sockaddr*>(&a.sun), a.len);
  }
  if (rc < 0) {
    if (errno == EADDRINUSE) return {};
    throw SysError(fmt::format("cannot restore {}: bind to {}, the name a queued message came "
                               "from", what, name),
                   errno);
  }
  struct stat st {};
  if (is_path(name) && !replaced && ::lstat(name.c_str(), &st) == 0) *made = st.st_ino;
  return sock;
}

}  // namespace

void send_queue(int from, const image::UnixSocket& q, const std::string& what,
                const PassedFile& passed, const std::string* to, const std::string& cwd) {
  for (size_t i = 0; i < q.queue.size(); i++) {
    const auto& msg = q.queue[i];
    iovec iov{const_cast<uint8_t*>(msg.data()), msg.size()};
    msghdr h{};
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    std::vector<char> control;
    if (i < q.queue_fds.size() && !q.queue_fds[i].empty()) {
      std::vector<int> fds;
      for (const auto& d : q.queue_fds[i]) fds.push_back(passed(d));
      control.resize(CMSG_SPACE(fds.size() * sizeof(int)));
      h.msg_control = control.data();
      h.msg_controllen = control.size();
      cmsghdr* c = CMSG_FIRSTHDR(&h);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
      std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
    }
    // A datagram that came from a named socket comes from one bound to that
    // name again (recvfrom gives the job its sender), made for it and closed
    // at once, its file removed; where the name is taken now, from snap's
    // unnamed socket, and said.
    int out = from;
    ScopedFd named;
    std::optional<ino_t> made;
    const std::string sender = i < q.queue_senders.size() ? q.queue_senders[i] : "";
    std::optional<InDirectory> in_sender;
    UnixAddress dest;
    if (to && !sender.empty()) {
      in_sender.emplace(sender, cwd, what);
      named = bind_sender(q.type, sender, what, &made);
      if (named) {
        out = named.get();
        in_sender.reset();
        dest = unix_address(*to, what);
        h.msg_name = &dest.sun;
        h.msg_namelen = dest.len;
      } else {
        warn("{}: a message queued on it came from {}, a name another socket or file holds now; "
             "it comes back from an unnamed socket (the job's recvfrom gets no sender for it)",
             what, sender);
      }
    }
    ssize_t n = ::sendmsg(out, &h, MSG_DONTWAIT | MSG_NOSIGNAL);
    const int err = errno;
    if (made) {
      InDirectory in(sender, cwd, what);
      struct stat st {};
      if (::lstat(sender.c_str(), &st) == 0 && st.st_ino == *made) ::unlink(sender.c_str());
    }
    if (n != static_cast<ssize_t>(msg.size()))
      throw SysError(fmt::format("cannot put back the {} bytes queued on {}", msg.size(), what),
                     n < 0 ? err : EAGAIN);
  }
}

ScopedFd make_inet_socket(const image::FileDesc& f, const std::string& what, bool port_shared) {
  const auto& s = *f.inet_socket;
  ScopedFd sock(::socket(s.family, s.type | SOCK_CLOEXEC, s.protocol));
  if (!sock)
    throw SysError(fmt::format("cannot restore {}: socket({}, {}, {})", what,
                               s.family == AF_INET6 ? "AF_INET6" : "AF_INET", s.type, s.protocol),
                   errno);
  set_socket_options(sock.get(), f, what);
  const bool any = s.local == "0.0.0.0" || s.local == "::";
  int reuse_was = 0;
  bool reuse_forced = false;
  // Listeners of the job that share their port were bound with
  // SO_REUSEPORT (the kernel allows no other way), whatever it says now: a
  // job may clear it after bind, which keeps the group. So bound again,
  // the option then set as the job had it. Datagram sockets may share a
  // port with SO_REUSEADDR instead (multicast receivers): those bind as
  // they are, the unicast delivery of a SO_REUSEPORT group not theirs.
  int reuseport_was = 0, reuseaddr = 0;
  socklen_t rlen = sizeof reuseaddr;
  ::getsockopt(sock.get(), SOL_SOCKET, SO_REUSEADDR, &reuseaddr, &rlen);
  port_shared = port_shared && !(s.protocol != IPPROTO_TCP && reuseaddr);
  if (port_shared && s.local_port) {
    int on = 1;
    socklen_t olen = sizeof reuseport_was;
    ::getsockopt(sock.get(), SOL_SOCKET, SO_REUSEPORT, &reuseport_was, &olen);
    if (::setsockopt(sock.get(), SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0)
      throw SysError(fmt::format("cannot restore {}: setsockopt(SO_REUSEPORT) to bind port {} "
                                 "with the job's other sockets on it",
                                 what, s.local_port),
                     errno);
  }
  if (s.local_port || !any) {
    sockaddr_storage ss;
    socklen_t len = inet_sockaddr(s.family, s.local, s.local_port, ss, what);
    int rc = ::bind(sock.get(), reinterpret_cast<sockaddr*>(&ss), len);
    if (rc < 0 && errno == EADDRNOTAVAIL) {
      // The job bound with IP_FREEBIND set then (an address this host
      // does not have now, or yet): bound the same way, the option set
      // back afterwards.
      int on = 1, was = 0;
      socklen_t olen = sizeof was;
      ::getsockopt(sock.get(), SOL_IP, IP_FREEBIND, &was, &olen);
      ::setsockopt(sock.get(), SOL_IP, IP_FREEBIND, &on, sizeof on);
      rc = ::bind(sock.get(), reinterpret_cast<sockaddr*>(&ss), len);
      int err = errno;
      ::setsockopt(sock.get(), SOL_IP, IP_FREEBIND, &was, sizeof was);
      errno = err;
    }
    if (rc < 0 && errno == EADDRINUSE && s.protocol == IPPROTO_TCP) {
      // Connections of the dead job may linger (TIME_WAIT) on the port, or
      // the restored ones (make_tcp_pair): bind over them as SO_REUSEADDR
      // allows (waiting out a TIME_WAIT that does not allow it), then
      // (after listen, which checks again) set it as the job had it.
      int on = 1;
      socklen_t olen = sizeof reuse_was;
      ::getsockopt(sock.get(), SOL_SOCKET, SO_REUSEADDR, &reuse_was, &olen);
      ::setsockopt(sock.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
      rc = bind_tcp(sock.get(), ss, len, s.local_port, what);
      reuse_forced = true;
    }
    if (rc < 0)
      throw SysError(fmt::format("cannot restore {}: bind to {}", what,
                                 printable(s.family, s.local, s.local_port)),
                     errno, errno == EADDRINUSE ? "another process holds this address now; "
                                                  "stop it and restore again"
                                                : "");
  }
  if (s.state == kListen && s.protocol == IPPROTO_TCP) {
    if (::listen(sock.get(), s.backlog) < 0)
      throw SysError(fmt::format("cannot restore {}: listen on {}", what,
                                 printable(s.family, s.local, s.local_port)),
                     errno);
  } else if (!s.peer.empty() && s.type != SOCK_STREAM) {
    sockaddr_storage ss;
    socklen_t len = inet_sockaddr(s.family, s.peer, s.peer_port, ss, what);
    if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&ss), len) < 0)
      throw SysError(fmt::format("cannot restore {}: connect to {}", what,
                                 printable(s.family, s.peer, s.peer_port)),
                     errno);
  }
  if (reuse_forced) ::setsockopt(sock.get(), SOL_SOCKET, SO_REUSEADDR, &reuse_was, sizeof reuse_was);
  if (port_shared && s.local_port && !reuseport_was &&
      ::setsockopt(sock.get(), SOL_SOCKET, SO_REUSEPORT, &reuseport_was, sizeof reuseport_was) < 0)
    throw SysError(fmt::format("cannot restore {}: setsockopt(SO_REUSEPORT) off after bind", what),
                   errno);
  shutdown_socket(sock.get(), s.shutdown, what);
  return sock;
}

namespace {

// The socket file bind() made gets the mode and owner the job's had (a
// bind makes it with snap's umask and ids: a root restore would leave a
// file the job's user could not remove from a sticky /tmp).
void give_name_file(const std::string& name, const image::UnixSocket::NameFile& nf,
                    const std::string& what) {
  struct stat st {};
  if (::lstat(name.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return;
  if ((st.st_uid != nf.uid || st.st_gid != nf.gid) && ::lchown(name.c_str(), nf.uid, nf.gid) != 0)
    throw SysError(fmt::format("cannot restore {}: chown {} to {}:{}", what, name, nf.uid, nf.gid),
                   errno);
  if ((st.st_mode & 07777) != nf.mode && ::fchmodat(AT_FDCWD, name.c_str(), nf.mode, 0) != 0)
    throw SysError(fmt::format("cannot restore {}: chmod {:o} {}", what, nf.mode, name), errno);
}

// The directories leading to `name` (relative to the working directory)
// that are gone, made again (0700), outermost first; their paths, as
// `cwd` makes them absolute, are added to `made`.
void make_missing_dirs(const std::string& name, const std::string& cwd,
                       std::vector<std::string>* made, const std::string& what) {
  std::vector<std::string> missing;
  for (size_t slash = name.rfind('/'); slash != std::string::npos && slash > 0;
       slash = name.rfind('/', slash - 1)) {
    std::string dir = name.substr(0, slash);
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0) break;
    missing.push_back(dir);
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0700) < 0 && errno != EEXIST)
      throw SysError(fmt::format("cannot restore {}: mkdir {} to bind its deleted name", what, *it),
                     errno);
    made->push_back((*it)[0] == '/' ? *it : cwd + "/" + *it);
  }
}

}  // namespace

void bind_unix_name(int sock, const image::FileDesc& f, const std::string& cwd,
                    const std::string& what, BoundName* bound) {
  const auto& u = *f.unix_socket;
  InDirectory in(u.name, cwd, what);
  UnixAddress a = unix_address(u.name, what);
  const bool deleted = u.name_deleted && is_path(u.name);
  // A deleted name whose directory is gone too (a temporary directory the
  // job removed once its peers had connected): the directory is made
  // while peers connect, then removed with the name.
  if (deleted) make_missing_dirs(u.name, cwd, &bound->made_dirs, what);
  // A name deleted before the dump may have been taken by another file
  // since (another socket of the job bound there): that one is moved
  // aside while this socket binds and takes its own file away.
  std::string aside;
  struct stat st {};
  if (deleted && ::lstat(u.name.c_str(), &st) == 0) {
    aside = u.name + ".snap-aside";
    if (::rename(u.name.c_str(), aside.c_str()) < 0)
      throw SysError(fmt::format("cannot restore {}: move {} aside to bind its deleted name", what,
                                 u.name),
                     errno);
  } else if (is_path(u.name)) {
    clear_stale_socket_file(u.name, u.type, what);
  }
  int rc = ::bind(sock, reinterpret_cast<sockaddr*>(&a.sun), a.len);
  int err = errno;
  // The file of a deleted name moves at once to a name of its own beside
  // it, which the image's peers connect to (several sockets may have been
  // bound to one name, each deleted in turn), removed once they have; or,
  // where that name would not fit in an address, stays until then.
  std::string file = u.name;
  if (rc == 0 && deleted) {
    const auto slash = u.name.rfind('/');
    std::string hidden = fmt::format("{}.snap-{:x}", u.name.substr(0, slash + 1), f.inode);
    if (hidden.size() < sizeof a.sun.sun_path && ::rename(u.name.c_str(), hidden.c_str()) == 0)
      file = bound->hidden = hidden;
    else if (!aside.empty())
      ::unlink(u.name.c_str());
    else if (::lstat(u.name.c_str(), &st) == 0)
      bound->deleted_inode = st.st_ino;
  }
  if (!aside.empty() && ::rename(aside.c_str(), u.name.c_str()) < 0) {
    int e = errno;
    if (!bound->hidden.empty()) ::unlink(bound->hidden.c_str());  // not noted anywhere yet
    throw SysError(fmt::format("cannot restore {}: move {} back to {}", what, aside, u.name), e);
  }
  if (rc < 0)
    throw SysError(fmt::format("cannot restore {}: bind to {}", what, u.name), err,
                   err == EADDRINUSE ? "another socket holds this name now; stop its owner "
                                       "and restore again"
                                     : "");
  if (u.name_file && is_path(u.name) && (file != u.name || aside.empty()))
    give_name_file(file, *u.name_file, what);
}

ScopedFd make_unix_socket(const image::FileDesc& f, const std::string& cwd, const std::string& what,
                          BoundName* bound, const PassedFile& passed) {
  const auto& u = *f.unix_socket;
  ScopedFd sock(::socket(AF_UNIX, u.type | SOCK_CLOEXEC, 0));
  if (!sock) throw SysError(fmt::format("cannot restore {}: socket(AF_UNIX, {})", what, u.type), errno);
  set_socket_options(sock.get(), f, what);
  if (u.name.empty()) return sock;
  bind_unix_name(sock.get(), f, cwd, what, bound);
  if (u.state == kListen && ::listen(sock.get(), u.backlog) < 0)
    throw SysError(fmt::format("cannot restore {}: listen on {}", what, u.name), errno);
  if (!u.queue.empty()) {
    // Messages that waited here: sent to it again from a socket of snap's
    // (through the file of its own a deleted name has).
    const std::string& at = bound->hidden.empty() ? u.name : bound->hidden;
    InDirectory in(at, cwd, what);
    UnixAddress a = unix_address(at, what);
    ScopedFd from(::socket(AF_UNIX, u.type | SOCK_CLOEXEC, 0));
    if (!from || ::connect(from.get(), reinterpret_cast<sockaddr*>(&a.sun), a.len) < 0)
      throw SysError(fmt::format("cannot restore {}: connect to {} to queue its messages", what,
                                 u.name),
                     errno);
    send_queue(from.get(), u, what, passed, &at, cwd);
  }
  return sock;
}

void delete_socket_name(const image::FileDesc& f, const std::string& cwd, uint64_t inode,
                        const std::string& what) {
  const auto& u = *f.unix_socket;
  InDirectory in(u.name, cwd, what);
  // Only the file this socket made, not one another socket made since.
  struct stat st {};
  if (::lstat(u.name.c_str(), &st) != 0 || st.st_ino != inode) return;
  if (::unlink(u.name.c_str()) < 0 && errno != ENOENT)
    throw SysError(fmt::format("cannot restore {}: unlink of {} (deleted before the dump)", what,
                               u.name),
                   errno);
}

void connect_unix(int sock, const std::string& name, const std::string& cwd,
                  const std::string& what) {
  InDirectory in(name, cwd, what);
  UnixAddress a = unix_address(name, what);
  if (::connect(sock, reinterpret_cast<sockaddr*>(&a.sun), a.len) < 0)
    throw SysError(fmt::format("cannot restore {}: connect to {}", what, name), errno);
}

ScopedFd make_orphan_unix_socket(const image::FileDesc& f, const std::string& what,
                                 const PassedFile& passed) {
  const auto& u = *f.unix_socket;
  int sv[2];
  if (::socketpair(AF_UNIX, u.type | SOCK_CLOEXEC, 0, sv) < 0)
    throw SysError("socketpair for " + what, errno);
  ScopedFd mine(sv[0]), theirs(sv[1]);
  set_socket_options(mine.get(), f, what);
  send_queue(theirs.get(), u, what, passed);
  theirs.reset();  // the peer closes: the job reads what is queued, then end of file
  shutdown_socket(mine.get(), u.shutdown, what);
  return mine;
}

}  // namespace snap::restore
