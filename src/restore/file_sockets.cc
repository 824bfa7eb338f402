// FilePlanner's sockets (restore/file_planner.h): TCP connections, other
// IPv4/IPv6 sockets and unix sockets (socket pairs, connections waiting to
// be accepted, sockets connected by name), connected and shut down once
// every socket is bound.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "restore/file_planner.h"
#include "restore/sockets.h"
#include "restore/tcp_connection.h"
#include "tracer/net_lock.h"
#include "tracer/tcp_repair.h"

namespace snap::restore {

namespace {

using image::FdType;

}  // namespace

// TCP connections between two sockets of the image saved without repair
// mode: each pair connected again before any other socket exists (a
// listener of the image at one end's port binds after them, beside them).
// The end whose port no listener of the image has is listened on for the
// moment, so that the other one can connect to it.
void FilePlanner::make_tcp_pairs() {
  if (tcp_close_) return;
  std::set<uint16_t> listened;  // ports listeners of the image hold
  std::map<TcpEnds, std::pair<const Process*, const FileDesc*>> peeked;  // one fd of each socket
  for (const auto& p : ckpt_.processes)
    for (const auto& f : p.fds) {
      const auto& s = f.inet_socket;
      if (s && s->protocol == IPPROTO_TCP && s->state == 10) listened.insert(s->local_port);
      if (s && s->tcp && s->tcp->peeked)
        peeked.try_emplace(tcp_ends(*s), &p, &f);
    }
  std::set<uint64_t> made;  // socket inodes
  for (const auto& entry : peeked) {
    const auto [p, f] = entry.second;
    if (made.count(f->inode)) continue;
    const auto& s = *f->inet_socket;
    const auto other = peeked.find(tcp_ends(s, true));
    const std::string name = fmt::format("{} (TCP connection {} -> {})", fd_name(*p, *f),
                                         printable(s.family, s.local, s.local_port),
                                         printable(s.family, s.peer, s.peer_port));
    if (other == peeked.end())
      throw Error(name + " was saved without repair mode, but its peer is not in the image",
                  "the image is damaged");
    // The end listened on for the moment is one whose port no listener of
    // the image holds; the other one connects to it.
    const auto [q, g] = other->second;
    const bool f_connects = listened.count(s.local_port) != 0;
    const FileDesc& client = f_connects ? *f : *g;
    const FileDesc& server = f_connects ? *g : *f;
    const std::string what = f_connects ? name : fmt::format("{}, the peer of {}", fd_name(*q, *g), name);
    auto [c, sv] = make_tcp_pair(client, server, what);
    for (auto [sock, d] : {std::pair{c.get(), &client}, std::pair{sv.get(), &server}})
      ::fcntl(sock, F_SETFL, d->flags & kStatusFlags);
    objects_[{2, client.inode, 0}] = keep(c.release(), "socket");
    objects_[{2, server.inode, 0}] = keep(sv.release(), "socket");
    made.insert(f->inode);
    made.insert(g->inode);
  }
}

int FilePlanner::socket(const Process& p, const FileDesc& f) {
  const std::string what = fd_name(p, f);
  if (f.inet_socket && f.inet_socket->tcp && f.inet_socket->tcp->peeked && !tcp_close_)
    throw Error(what + " was saved without repair mode, but was not connected again",
                "the image is damaged");
  if (f.inet_socket && f.inet_socket->closed) {  // saved so (dump --tcp-close)
    ScopedFd s = make_closed_tcp_connection(f, what);
    ::fcntl(s.get(), F_SETFL, f.flags & kStatusFlags);
    return keep(s.release(), "socket");
  }
  if (f.inet_socket && f.inet_socket->tcp) {
    if (!f.inet_socket->tcp->network_lock.empty()) network_locks_.insert(f.inet_socket->tcp->network_lock);
    // In repair mode until every socket exists (connect_sockets); or
    // closed, as asked.
    ScopedFd s = tcp_close_ ? make_closed_tcp_connection(f, what) : make_tcp_connection(f, what);
    if (tcp_close_) {
      ::fcntl(s.get(), F_SETFL, f.flags & kStatusFlags);
      return keep(s.release(), "socket");
    }
    ::fcntl(s.get(), F_SETFL, f.flags & kStatusFlags);
    int fd = keep(s.release(), "socket");
    tcp_later_.push_back({fd, &f, what});
    return fd;
  }
  if (f.inet_socket) {
    const auto& mine = *f.inet_socket;
    auto bound = bound_ports_.find({mine.protocol, mine.family, mine.local, mine.local_port});
    const bool port_shared = bound != bound_ports_.end() && bound->second.size() > 1;
    ScopedFd s = make_inet_socket(f, what, port_shared);
    ::fcntl(s.get(), F_SETFL, f.flags & kStatusFlags);
    return keep(s.release(), "socket");
  }
  const auto& u = f.unix_socket;
  if (!u)
    throw Error(what + " is a socket of a family snap cannot restore",
                "only unix, IPv4 and IPv6 sockets come back");
  auto known = u->peer_inode ? sockets_.find(u->peer_inode) : sockets_.end();
  const FileDesc* peer = known != sockets_.end() ? known->second : nullptr;
  const bool self = peer == &f || (peer && peer->inode == f.inode);
  const bool mutual = peer && !self && peer->unix_socket &&
                      peer->unix_socket->peer_inode == f.inode;
  // Two sockets connected to each other: one socketpair (datagram ones
  // then bound to their names, which may be one and the same deleted name).
  if (mutual) return socket_pair(p, f, *peer);
  // Its connection waits to be accepted by a listener of the image: made
  // now, connected to it again (in the listener's accept order) later.
  if (u->pending_on && sockets_.count(u->pending_on)) {
    const auto& l = *sockets_[u->pending_on];
    ScopedFd s = make_named_unix_socket(p, f, what);
    ::fcntl(s.get(), F_SETFL, (f.flags & kStatusFlags) & ~O_NONBLOCK);
    int fd = keep(s.release(), "socket");
    pending_[f.inode] = {fd, l.unix_socket->name, u->pending_on, true, u->shutdown,
                         f.flags & kStatusFlags, socket_cwd_[u->pending_on], what};
    return fd;
  }
  // Connected, and the peer was closed (a named datagram socket says
  // connected too when others connected to it), or connected to snap
  // itself (a `snap checkpoint` that got its answer).
  if (u->detached_peer ||
      (u->state == 1 && !u->peer_inode && (u->type != SOCK_DGRAM || u->name.empty()))) {
    ScopedFd s = make_orphan_unix_socket(f, what, passed_file(p));
    ::fcntl(s.get(), F_SETFL, f.flags & kStatusFlags);
    return keep(s.release(), "socketpair");
  }
  if (u->peer_inode && !peer && u->type != SOCK_DGRAM)
    throw Error(what + " leads outside the checkpointed processes",
                "snap restores connections between the processes of the image only");
  ScopedFd s = make_named_unix_socket(p, f, what);
  ::fcntl(s.get(), F_SETFL, (f.flags & kStatusFlags) & ~O_NONBLOCK);
  int fd = keep(s.release(), "socket");
  // Connected once every socket is bound: to itself, to a socket of the
  // image or to one outside it, by name.
  std::string to = self ? u->name : peer ? peer->unix_socket->name : u->peer_name;
  if (u->peer_inode || u->shutdown || (f.flags & O_NONBLOCK))
    later_.push_back({fd, to, self || peer ? u->peer_inode : 0, u->peer_inode != 0, u->shutdown,
                      f.flags & kStatusFlags, p.cwd, what});
  return fd;
}

// A unix socket of `p` bound to its name. The socket file the bind made is
// removed again if the restore fails (a deleted name's once its peers have
// connected, with the directories made again for it).
ScopedFd FilePlanner::make_named_unix_socket(const Process& p, const FileDesc& f,
                                             const std::string& what) {
  BoundName bound;
  ScopedFd s = make_unix_socket(f, p.cwd, what, &bound, passed_file(p));
  note_bound_name(f, p.cwd, what, bound);
  return s;
}

// What binding `f` to its name made: a deleted name's file to delete once
// peers have connected, directories made for it, files to remove again if
// the restore fails.
void FilePlanner::note_bound_name(const FileDesc& f, const std::string& cwd,
                                  const std::string& what, const BoundName& bound) {
  const auto& u = *f.unix_socket;
  if (bound.deleted_inode) deleted_names_.push_back({&f, cwd, bound.deleted_inode, what});
  for (const auto& d : bound.made_dirs) {
    out_.made_paths_.push_back(d);
    deleted_name_dirs_.push_back(d);
  }
  auto absolute = [&](const std::string& name) {
    return name.empty() || name[0] == '/' ? name : cwd + "/" + name;
  };
  if (!bound.hidden.empty()) {
    hidden_names_[f.inode] = {bound.hidden, cwd};
    out_.made_paths_.push_back(absolute(bound.hidden));
  }
  if (!u.name.empty() && u.name[0] != '@' && (!u.name_deleted || !bound.made_dirs.empty()) &&
      bound.hidden.empty())
    out_.made_paths_.push_back(absolute(u.name));
}

// Files in flight on a socket of `p`: a pipe end is the object of that
// end (shared with processes holding it); anything else is opened anew.

PassedFile FilePlanner::passed_file(const Process& p) {
  return [this, &p](const FileDesc& d) {
    if (d.type == FdType::Pipe) return object_for(p, d);
    return create(p, d, desc_key(p, d));
  };
}

int FilePlanner::socket_pair(const Process& p, const FileDesc& f, const FileDesc& peer) {
  const std::string what = fd_name(p, f);
  int sv[2];
  if (::socketpair(AF_UNIX, f.unix_socket->type | SOCK_CLOEXEC, 0, sv) < 0)
    throw SysError("socketpair for " + what, errno);
  ScopedFd mine(sv[0]), theirs(sv[1]);
  set_socket_options(mine.get(), f, what);
  set_socket_options(theirs.get(), peer, what + "'s peer");
  // Datagram sockets keep their names: a socket of a pair may bind (the
  // kernel routes by peer, not by name, so two may share one deleted name).
  const bool dgram = f.unix_socket->type == SOCK_DGRAM;
  if (dgram)
    for (auto [sock, d, who] : {std::tuple{mine.get(), &f, what},
                                std::tuple{theirs.get(), &peer, what + "'s peer"}}) {
      if (d->unix_socket->name.empty()) continue;
      const std::string& cwd = socket_cwd_.at(d->inode);
      BoundName bound;
      bind_unix_name(sock, *d, cwd, who, &bound);
      note_bound_name(*d, cwd, who, bound);
    }
  // What waited to be read on one end was sent by the other.
  send_queue(theirs.get(), *f.unix_socket, what, passed_file(p));
  send_queue(mine.get(), *peer.unix_socket, what, passed_file(p));
  shutdown_socket(mine.get(), f.unix_socket->shutdown, what);
  shutdown_socket(theirs.get(), peer.unix_socket->shutdown, what + "'s peer");
  ::fcntl(mine.get(), F_SETFL, f.flags & kStatusFlags);
  ::fcntl(theirs.get(), F_SETFL, peer.flags & kStatusFlags);
  for (const auto* s : {&f, &peer})
    if (!dgram && !s->unix_socket->name.empty())
      out_.warnings_.push_back(fmt::format("pid {}: socket {} comes back connected, without "
                                           "its address {}",
                                           p.pid, s->path, s->unix_socket->name));
  int a = keep(mine.release(), "socketpair");
  int b = keep(theirs.release(), "socketpair");
  objects_[{2, peer.inode, 0}] = b;
  return a;
}

// Connections and shutdowns of unix sockets, once all are bound.
void FilePlanner::connect_sockets() {
  // To a socket of the image by name, or by the name of its own a deleted
  // name's file has (note_bound_name), which leads to it alone.
  auto connect = [&](const LaterSocket& l) {
    auto h = l.peer ? hidden_names_.find(l.peer) : hidden_names_.end();
    if (h != hidden_names_.end())
      connect_unix(l.fd, h->second.first, h->second.second, l.what);
    else
      connect_unix(l.fd, l.to, l.cwd, l.what);
  };
  for (const auto& l : later_) {
    if (l.connect) connect(l);
    shutdown_socket(l.fd, l.shutdown, l.what);
    ::fcntl(l.fd, F_SETFL, l.status_flags);
  }
  // Connections not accepted at the dump, pending again in their order.
  for (const auto& [inode, f] : sockets_)
    for (uint64_t c : f && f->unix_socket ? f->unix_socket->pending : std::vector<uint64_t>{}) {
      auto it = pending_.find(c);
      if (it == pending_.end()) continue;
      const auto& l = it->second;
      connect(l);
      shutdown_socket(l.fd, l.shutdown, l.what);
      ::fcntl(l.fd, F_SETFL, l.status_flags);
    }
  for (const auto& d : deleted_names_) delete_socket_name(*d.f, d.cwd, d.inode, d.what);
  for (const auto& [inode, h] : hidden_names_) {
    const auto& [name, cwd] = h;
    const std::string path = name[0] == '/' ? name : cwd + "/" + name;
    if (::unlink(path.c_str()) < 0 && errno != ENOENT)
      throw SysError(fmt::format("cannot restore socket inode {}: unlink of {} (its deleted "
                                 "name's file)", inode, path),
                     errno);
  }
  for (auto it = deleted_name_dirs_.rbegin(); it != deleted_name_dirs_.rend(); ++it)
    ::rmdir(it->c_str());  // innermost first; one something else was put in stays
  for (const auto& t : tcp_later_) leave_tcp_repair(t.fd, *t.f, t.what);
  // What the peers sent while the job was down was dropped (the dump's
  // network lock, tracer/net_lock.h): now their connections exist again.
  // Before the unsent data goes out: its acknowledgements must come in.
  for (const auto& name : network_locks_) netlock::release(name);
  for (const auto& t : tcp_later_) finish_tcp_connection(t.fd, *t.f, t.what);
}

}  // namespace snap::restore
