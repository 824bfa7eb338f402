#include "image/sharing.h"

#include <fcntl.h>
#include <string.h>
#include <sys/wait.h>

#include <algorithm>
#include <map>
#include <set>

namespace snap::image {

Sharing find_sharing(const Checkpoint& c) {
  Sharing out;
  std::map<uint64_t, SharedFile> files;
  std::map<uint64_t, PipeLink> pipes;
  std::map<uint64_t, SocketEnd> sockets;
  std::map<uint64_t, int> socket_type;
  std::map<uint64_t, uint64_t> socket_peer;
  std::map<std::pair<uint64_t, uint64_t>, SharedMemory> memory;
  for (const auto& p : c.processes) {
    for (const auto& f : p.fds) {
      const FdRef ref{p.pid, f.fd};
      if (f.file_id) {
        auto& sf = files[f.file_id];
        sf.file_id = f.file_id;
        sf.type = f.type;
        sf.path = f.path;
        sf.fds.push_back(ref);
      }
      if (f.type == FdType::Pipe) {
        auto& pl = pipes[f.inode];
        pl.inode = f.inode;
        ((f.flags & O_ACCMODE) == O_RDONLY ? pl.readers : pl.writers).push_back(ref);
      }
      if (f.unix_socket) {
        auto& s = sockets[f.inode];
        if (s.fds.empty()) {
          s.inode = f.inode;
          for (const auto& m : f.unix_socket->queue) s.queued_bytes += m.size();
          s.queued_messages = f.unix_socket->queue.size();
        }
        s.fds.push_back(ref);
        socket_type[f.inode] = f.unix_socket->type;
        socket_peer[f.inode] = f.unix_socket->peer_inode;
      }
    }
    for (const auto& m : p.mappings) {
      if (m.kind != MappingKind::SharedAnon || m.inode == 0) continue;
      auto& sm = memory[{m.dev, m.inode}];
      sm.dev = m.dev;
      sm.inode = m.inode;
      if (std::find(sm.pids.begin(), sm.pids.end(), p.pid) == sm.pids.end()) sm.pids.push_back(p.pid);
      sm.pages_dumped += m.pages_dumped;
    }
  }
  auto many_processes = [](const std::vector<FdRef>& refs) {
    return std::any_of(refs.begin(), refs.end(), [&](const FdRef& r) { return r.pid != refs[0].pid; });
  };
  for (auto& [id, sf] : files)
    if (many_processes(sf.fds)) out.files.push_back(std::move(sf));
  for (auto& [ino, pl] : pipes) {
    std::vector<FdRef> all = pl.writers;
    all.insert(all.end(), pl.readers.begin(), pl.readers.end());
    if (many_processes(all)) out.pipes.push_back(std::move(pl));
  }
  for (const auto& [ino, end] : sockets) {
    uint64_t peer = socket_peer[ino];
    if (!peer || ino > peer || !sockets.count(peer)) continue;
    if (socket_peer[peer] != ino) continue;  // a datagram socket sending to a bound one
    out.socket_pairs.push_back({socket_type[ino], end, sockets[peer]});
  }
  for (auto& [key, sm] : memory)
    if (sm.pids.size() > 1) out.memory.push_back(std::move(sm));
  return out;
}

std::vector<std::pair<const Process*, int>> tree_order(const Checkpoint& c) {
  std::set<pid_t> in_image;
  for (const auto& p : c.processes) in_image.insert(p.pid);
  std::vector<std::pair<const Process*, int>> out;
  auto visit = [&](auto& self, const Process& p, int depth) -> void {
    out.emplace_back(&p, depth);
    for (const auto& q : c.processes)
      if (q.ppid == p.pid && q.pid != p.pid) self(self, q, depth + 1);
  };
  for (const auto& p : c.processes)
    if (!in_image.count(p.ppid) || p.ppid == p.pid) visit(visit, p, 0);
  return out;
}

std::string wait_status_text(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* abbrev = ::sigabbrev_np(sig);
    std::string name = abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
    return "killed by " + name + (WCOREDUMP(status) ? " (core dumped)" : "");
  }
  return "wait status " + std::to_string(status);
}

}  // namespace snap::image
