// The process tree and what its processes share (issue 9), as facts of
// snap info's document. The analysis itself is image::find_sharing.
#include "job/describe_tree.h"

#include <sys/socket.h>
#include <sys/sysmacros.h>

#include <fmt/core.h>

#include "image/manifest.h"
#include "image/sharing.h"

namespace snap::job {


namespace {

std::string socket_type_name(int type) {
  switch (type) {
    case SOCK_STREAM: return "stream";
    case SOCK_DGRAM: return "dgram";
    case SOCK_SEQPACKET: return "seqpacket";
    default: return fmt::format("type {}", type);
  }
}

std::string socket_state_name(int state) {
  switch (state) {
    case 1: return "connected";
    case 7: return "unconnected";
    case 10: return "listening";
    default: return fmt::format("state {}", state);
  }
}

std::string hex_bytes(const std::vector<uint8_t>& b) {
  std::string s;
  for (uint8_t c : b) s += fmt::format("{:02x}", c);
  return s;
}

ojson refs_json(const std::vector<image::FdRef>& refs) {
  ojson a = ojson::array();
  for (const auto& r : refs) a.push_back({{"pid", r.pid}, {"fd", r.fd}});
  return a;
}


}  // namespace

void describe_tree_fields(const image::Process& p, ojson& j) {
  j["zombie"] = p.zombie;
  j["exit_status"] = p.zombie ? ojson(p.exit_status) : ojson(nullptr);
  j["exit_text"] = p.zombie ? ojson(image::wait_status_text(p.exit_status)) : ojson(nullptr);
  j["child_subreaper"] = p.child_subreaper ? ojson(*p.child_subreaper) : ojson(nullptr);
}

void describe_fd_sharing(const image::FileDesc& f, ojson& j) {
  j["inode"] = f.inode;
  j["file_id"] = f.file_id ? ojson(f.file_id) : ojson(nullptr);
  if (!f.unix_socket) {
    j["unix_socket"] = nullptr;
    return;
  }
  const auto& u = *f.unix_socket;
  uint64_t bytes = 0;
  ojson queue = ojson::array();
  for (const auto& m : u.queue) {
    bytes += m.size();
    queue.push_back(hex_bytes(m));
  }
  j["unix_socket"] = {{"type", socket_type_name(u.type)},
                      {"state", socket_state_name(u.state)},
                      {"peer_inode", u.peer_inode ? ojson(u.peer_inode) : ojson(nullptr)},
                      {"name", u.name},
                      {"queued_messages", u.queue.size()},
                      {"queued_bytes", bytes},
                      {"queue", queue}};
}

void describe_tree_and_sharing(const image::Checkpoint& c, ojson& doc) {
  doc["tree"] = ojson::array();
  for (const auto& [p, depth] : image::tree_order(c))
    doc["tree"].push_back({{"pid", p->pid}, {"depth", depth}});

  const auto s = image::find_sharing(c);
  ojson sh;
  sh["open_files"] = ojson::array();
  for (const auto& f : s.files)
    sh["open_files"].push_back({{"file_id", f.file_id},
                                {"type", image::name_of(f.type)},
                                {"path", f.path},
                                {"fds", refs_json(f.fds)}});
  sh["pipes"] = ojson::array();
  for (const auto& p : s.pipes)
    sh["pipes"].push_back(
        {{"inode", p.inode}, {"writers", refs_json(p.writers)}, {"readers", refs_json(p.readers)}});
  sh["unix_socket_pairs"] = ojson::array();
  for (const auto& sp : s.socket_pairs) {
    ojson ends = ojson::array();
    for (const auto* e : {&sp.a, &sp.b})
      ends.push_back({{"inode", e->inode},
                      {"fds", refs_json(e->fds)},
                      {"queued_bytes", e->queued_bytes},
                      {"queued_messages", e->queued_messages}});
    sh["unix_socket_pairs"].push_back({{"type", socket_type_name(sp.type)}, {"ends", ends}});
  }
  sh["shared_memory"] = ojson::array();
  for (const auto& m : s.memory)
    sh["shared_memory"].push_back({{"dev", fmt::format("{:02x}:{:02x}", major(m.dev), minor(m.dev))},
                                   {"inode", m.inode},
                                   {"pids", m.pids},
                                   {"pages_dumped", m.pages_dumped}});
  doc["sharing"] = sh;
}

}  // namespace snap::job
