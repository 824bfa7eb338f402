// The planner behind OpenFiles::create (private to src/restore): it goes
// through every fd and shared mapping of the image and makes each open
// file description once. Its general part, files and pipes are in
// files.cc, its sockets in file_sockets.cc, its shared memory in
// shared_memory.cc.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdint>
#include <fmt/core.h>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "restore/files.h"
#include "restore/sockets.h"
#include "restore/tty.h"

namespace snap::restore {

inline bool is_read_end(const image::FileDesc& f) { return (f.flags & O_ACCMODE) == O_RDONLY; }

inline std::string fd_name(const image::Process& p, const image::FileDesc& f) {
  return fmt::format("pid {} fd {} ({})", p.pid, f.fd, f.path);
}

// Which open file description an fd is: pipes by inode and end, sockets by
// inode, everything else by the dump's file_id (or, unknown, on its own).
using DescKey = std::tuple<int, uint64_t, uint64_t>;
inline DescKey desc_key(const image::Process& p, const image::FileDesc& f) {
  using image::FdType;
  if (f.type == FdType::Pipe) return {1, f.inode, is_read_end(f) ? 0 : 1};
  if (f.type == FdType::Socket && f.inode) return {2, f.inode, 0};
  if (f.file_id) return {3, f.file_id, 0};
  return {4, static_cast<uint64_t>(p.pid), static_cast<uint64_t>(f.fd)};
}

// The status flags an open file description carries (F_SETFL).
inline constexpr int kStatusFlags = O_APPEND | O_NONBLOCK | O_ASYNC | O_DIRECT | O_NOATIME;

class FilePlanner {
 public:
  FilePlanner(const image::Checkpoint& c, image::ImageReader& img, bool allow, bool tcp_close,
              OpenFiles& out, const FillOptions& fill = {})
      : ckpt_(c), img_(img), allow_changed_(allow), tcp_close_(tcp_close), out_(out), fill_(fill) {}

  void run();

 private:
  using FileDesc = image::FileDesc;
  using Process = image::Process;

  struct PipeInfo {
    bool read = false, write = false;  // ends held in the image
    const std::vector<uint8_t>* data = nullptr;
  };

  // files.cc: the plan, the objects of fds, ghosts, files, pipes and FIFOs.
  void raise_fd_limit();
  void index();
  void remake_ghosts();
  void remake_temp_files();
  uint64_t fill_from_pages(int fd, uint64_t start, const std::string& who);
  int ghost_fd(uint64_t id, const std::string& who);
  int ghost_description(const Process& p, const FileDesc& f);
  int keep(int fd, const std::string& what);
  bool own_file(const Process& p, const FileDesc& f, FdAction& a);
  int object_for(const Process& p, const FileDesc& f);
  int create(const Process& p, const FileDesc& f, const DescKey& key);
  int pipe_description(const Process& p, const FileDesc& f, const DescKey& end_key);
  int reopen(const Process& p, const FileDesc& f, const std::string& path, int flags);
  bool check_file(const Process& p, const FileDesc& f);
  std::pair<struct stat, int> stat_once(const std::string& path);
  bool is_image_proc_file(const std::string& path) const;
  // A /proc file of a process or thread of the image (either of the two).
  bool is_job_proc_file(const std::string& path) const {
    return is_image_proc_file(path) || names_image_thread(path) != 0;
  }
  // The pid of the process whose thread (not its leader) `path` is a /proc
  // file of; 0 for any other path.
  pid_t names_image_thread(const std::string& path) const;
  int open_file(const Process& p, const FileDesc& f);
  void refill(const Process& p, const FileDesc& f, int write_fd, const std::vector<uint8_t>& data);
  void set_pipe_size(const Process& p, const FileDesc& f, int fd);
  int pipe_end(const Process& p, const FileDesc& f);
  int fifo(const Process& p, const FileDesc& f, const std::string& path);

  // file_sockets.cc
  int socket(const Process& p, const FileDesc& f);
  void make_tcp_pairs();
  PassedFile passed_file(const Process& p);
  ScopedFd make_named_unix_socket(const Process& p, const FileDesc& f, const std::string& what);
  void note_bound_name(const FileDesc& f, const std::string& cwd, const std::string& what,
                       const BoundName& bound);
  int socket_pair(const Process& p, const FileDesc& f, const FileDesc& peer);
  void connect_sockets();

  // shared_memory.cc
  int memfd_for(const image::Mapping& m);
  void remake_named_shm();
  void fill_shared_memory();
  uint64_t put_back_saved_files();

  const image::Checkpoint& ckpt_;
  image::ImageReader& img_;
  bool allow_changed_;
  bool tcp_close_;  // TCP connections come back closed
  OpenFiles& out_;
  FillOptions fill_;  // the workers that write shared memory and files (fill_file)
  std::unordered_map<std::string, std::pair<struct stat, int>> stats_;  // stat_once
  std::map<uint64_t, PipeInfo> pipes_;
  std::map<uint64_t, const FileDesc*> sockets_;
  struct LaterSocket {
    int fd;
    std::string to;  // connect to this name, if `connect`
    uint64_t peer;   // the socket of the image it names (inode), or 0
    bool connect;
    int shutdown, status_flags;
    std::string cwd, what;
  };
  std::vector<LaterSocket> later_;
  struct LaterTcp {
    int fd;
    const FileDesc* f;
    std::string what;
  };
  std::vector<LaterTcp> tcp_later_;  // TCP connections in repair mode
  std::set<std::string> network_locks_;  // the dump's, removed once they exist
  std::map<uint64_t, LaterSocket> pending_;  // by inode: to connect in accept order
  std::map<uint64_t, std::string> socket_cwd_;  // by inode: its process's cwd
  // Listeners and bound datagram sockets (inodes) by protocol, family,
  // address and port: more than one shares the port (SO_REUSEPORT).
  std::map<std::tuple<int, int, std::string, uint16_t>, std::set<uint64_t>> bound_ports_;
  struct DeletedName {
    const FileDesc* f;
    std::string cwd;
    uint64_t inode;
    std::string what;
  };
  std::vector<DeletedName> deleted_names_;  // bound, to delete once connected to
  std::vector<std::string> deleted_name_dirs_;  // made for them, removed after them
  // By inode: a deleted name's file under a name of its own, and the cwd
  // that name is relative to (sockets.h, BoundName::hidden).
  std::map<uint64_t, std::pair<std::string, std::string>> hidden_names_;
  std::map<DescKey, int> external_;  // root's stdio: snap restore's fd
  std::map<DescKey, int> objects_;
  std::map<DescKey, int> uses_;  // fds of the whole tree per description
  std::set<DescKey> split_;       // shared /proc files of the job, said once each
  std::set<pid_t> pids_;              // the image's processes
  std::map<pid_t, pid_t> threads_;    // its threads but the leaders: their process
  std::map<DescKey, uint64_t> pipe_end_owner_;  // pipe end: the file_id that has pipe2()'s fd
  std::map<ShmKey, int> shm_;
  std::map<uint64_t, int> ghosts_;  // ghost id -> snap's fd on the remade file
  std::set<uint64_t> memfd_own_given_;  // memfds whose memfd_create description an fd has
  std::set<uint64_t> memfds_;           // ghost ids of the remade memfds
  std::set<uint64_t> fifo_filled_;  // FIFOs (inode) whose unread data is back
  std::optional<PtyTable> ptys_;
};

}  // namespace snap::restore
