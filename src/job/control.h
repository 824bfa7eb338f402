// The control socket of a checkpoint directory: `snap checkpoint` (and
// `snap watch --dir`) ask the `snap run` that owns CKPT for a checkpoint
// through CKPT/control.sock, which only the owner can open (the socket is
// 0600 in a 0700 directory).
//
// Protocol, one line each way: the client sends
//   "checkpoint wait=0|1 kill=0|1 inode=INO\n"
// (INO: the inode of the client's own socket) and, with wait=1, reads one
// line back: "ok N\n" (checkpoint N is safe) or "error MESSAGE\n". A client
// that is itself part of the job is frozen inside that read: the image then
// holds the answer waiting in its socket (see job::DumpOptions), so after a
// restore the call returns as if the checkpoint had just been taken.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/scoped_fd.h"

namespace snap::job {

std::string control_socket_path(const std::string& ckpt_dir);

struct ControlRequest {
  bool wait = false, kill = false;
  uint64_t client_inode = 0;
};

class ControlServer {
 public:
  // Binds CKPT/control.sock (replacing a stale one: the caller holds the
  // directory's run lock). Removes it again when destroyed.
  explicit ControlServer(const std::string& ckpt_dir);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  int listen_fd() const { return listen_.get(); }
  // fds to poll for readable requests.
  std::vector<int> connection_fds() const;

  // Accepts every waiting connection and reads every complete request,
  // without blocking. Returns true if some request is waiting to be served.
  bool poll_requests();
  bool any_kill_requested() const;

  // While a checkpoint (number `n`) is being taken and the job is stopped:
  // the answer the socket of the job whose peer is `peer_inode` will find
  // waiting, if that peer is one of ours ("ok N\n" if its request was
  // received, nothing if not: the client then asks again).
  std::optional<std::vector<uint8_t>> reply_for(uint64_t peer_inode, int n);

  // Answers every request received so far with `line` and closes them
  // (requests that arrive later stay for the next checkpoint).
  void answer_received(const std::string& line);
  // Answers every connection, received or not, and closes them all.
  void answer_all(const std::string& line);

 private:
  struct Conn {
    ScopedFd fd;
    uint64_t inode = 0;  // of our end
    std::string buf;
    std::optional<ControlRequest> req;
  };
  void read_request(Conn& c);
  std::string path_;
  ScopedFd listen_;
  std::vector<Conn> conns_;
};

// The client side: asks the snap run owning `ckpt_dir` for a checkpoint.
// With wait: returns the checkpoint's number once it is safe. Throws Error
// when no snap run owns the directory, or the checkpoint failed.
std::optional<int> request_checkpoint(const std::string& ckpt_dir, bool wait, bool kill);

}  // namespace snap::job
