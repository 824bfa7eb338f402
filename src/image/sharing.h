// What the processes of a checkpoint share, and how they hang together:
// derived from the manifest alone (for `snap info`; restore has its own use
// of the same fields).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "image/checkpoint.h"

namespace snap::image {

struct FdRef {
  pid_t pid = 0;
  int fd = -1;
  bool operator==(const FdRef&) const = default;
};

// One open file description held by fds of more than one process.
struct SharedFile {
  uint64_t file_id = 0;
  FdType type = FdType::Other;
  std::string path;
  std::vector<FdRef> fds;
};

// A pipe whose ends are held by more than one process.
struct PipeLink {
  uint64_t inode = 0;
  std::vector<FdRef> writers, readers;
};

// A unix socket and the fds that hold it.
struct SocketEnd {
  uint64_t inode = 0;
  std::vector<FdRef> fds;
  uint64_t queued_bytes = 0, queued_messages = 0;
};
// Two connected unix sockets, both in the image (a has the lower inode).
struct SocketPair {
  int type = 0;
  SocketEnd a, b;
};

// A shared memory object (shared_anon mappings with one dev and inode)
// mapped by more than one process.
struct SharedMemory {
  uint64_t dev = 0, inode = 0;
  std::vector<pid_t> pids;  // each once, in image order
  uint64_t pages_dumped = 0;
};

struct Sharing {
  std::vector<SharedFile> files;
  std::vector<PipeLink> pipes;
  std::vector<SocketPair> socket_pairs;
  std::vector<SharedMemory> memory;
};

Sharing find_sharing(const Checkpoint& c);

// Processes in tree order (depth first, children in image order) with
// their depth below the root (0); processes whose parent is not in the
// image count as roots.
std::vector<std::pair<const Process*, int>> tree_order(const Checkpoint& c);

// "exit status 7", "killed by SIGKILL", "killed by SIGSEGV (core dumped)".
std::string wait_status_text(int status);

}  // namespace snap::image
