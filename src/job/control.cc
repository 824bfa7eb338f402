#include "job/control.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fmt/core.h>
#include <sstream>
#include <thread>

#include "base/error.h"

namespace snap::job {

namespace {

sockaddr_un address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path)
    throw Error("the checkpoint directory's path is too long for its control socket (" + path + ")",
                "use a shorter path for --dir");
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

uint64_t inode_of(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
}

std::optional<ControlRequest> parse_request(const std::string& line) {
  std::istringstream in(line);
  std::string word;
  if (!(in >> word) || word != "checkpoint") return std::nullopt;
  ControlRequest r;
  while (in >> word) {
    if (word == "wait=1") r.wait = true;
    else if (word == "kill=1") r.kill = true;
    else if (word.starts_with("inode=")) r.client_inode = std::stoull(word.substr(6));
  }
  return r;
}

void send_line(int fd, const std::string& line) {
  ssize_t n = ::send(fd, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  (void)n;  // a client that went away needs no answer
}

}  // namespace

std::string control_socket_path(const std::string& ckpt_dir) { return ckpt_dir + "/control.sock"; }

ControlServer::ControlServer(const std::string& ckpt_dir) : path_(control_socket_path(ckpt_dir)) {
  sockaddr_un a = address(path_);
  listen_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listen_) throw SysError("socket(AF_UNIX)", errno);
  ::unlink(path_.c_str());
  mode_t old = ::umask(077);
  int rc = ::bind(listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::umask(old);
  if (rc < 0) throw SysError("bind " + path_, errno);
  if (::listen(listen_.get(), 64) < 0) throw SysError("listen " + path_, errno);
}

ControlServer::~ControlServer() { ::unlink(path_.c_str()); }

std::vector<int> ControlServer::connection_fds() const {
  std::vector<int> fds;
  for (const auto& c : conns_) fds.push_back(c.fd.get());
  return fds;
}

void ControlServer::read_request(Conn& c) {
  if (c.req) return;
  char buf[256];
  for (;;) {
    ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) break;
    c.buf.append(buf, static_cast<size_t>(n));
  }
  if (auto nl = c.buf.find('\n'); nl != std::string::npos) {
    c.req = parse_request(c.buf.substr(0, nl));
    if (!c.req) {
      send_line(c.fd.get(), "error not a checkpoint request\n");
      c.fd.reset();
    }
  }
}

bool ControlServer::poll_requests() {
  for (;;) {
    int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) break;
    Conn c;
    c.fd.reset(fd);
    c.inode = inode_of(fd);
    conns_.push_back(std::move(c));
  }
  bool any = false;
  for (auto& c : conns_) {
    if (c.fd) read_request(c);
    any |= c.fd && c.req.has_value();
  }
  std::erase_if(conns_, [](const Conn& c) { return !c.fd; });
  return any;
}

bool ControlServer::any_kill_requested() const {
  for (const auto& c : conns_)
    if (c.req && c.req->kill) return true;
  return false;
}

std::optional<std::vector<uint8_t>> ControlServer::reply_for(uint64_t peer_inode, int n) {
  poll_requests();  // a client frozen just after connecting is ours too
  for (auto& c : conns_) {
    if (c.inode != peer_inode) continue;
    if (!c.req || !c.req->wait) return std::vector<uint8_t>{};
    std::string line = fmt::format("ok {}\n", n);
    return std::vector<uint8_t>(line.begin(), line.end());
  }
  return std::nullopt;
}

void ControlServer::answer_received(const std::string& line) {
  for (auto& c : conns_)
    if (c.req) {
      if (c.req->wait) send_line(c.fd.get(), line);
      c.fd.reset();
    }
  std::erase_if(conns_, [](const Conn& c) { return !c.fd; });
}

void ControlServer::answer_all(const std::string& line) {
  for (auto& c : conns_) send_line(c.fd.get(), line);
  conns_.clear();
}

std::optional<int> request_checkpoint(const std::string& ckpt_dir, bool wait, bool kill) {
  const std::string path = control_socket_path(ckpt_dir);
  sockaddr_un a = address(path);
  // A connection can end without an answer when the job (this very client,
  // say) was restored from a checkpoint taken before snap run read the
  // request: ask again, of the snap run that owns the directory now.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (int attempt = 0;; attempt++) {
    ScopedFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s) throw SysError("socket(AF_UNIX)", errno);
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
      int err = errno;
      if (attempt > 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        continue;
      }
      throw SysError("connect " + path, err,
                     "no 'snap run' owns " + ckpt_dir + ": start the job with 'snap run --dir " +
                         ckpt_dir + " -- PROGRAM', or use 'snap dump --pid'");
    }
    std::string req = fmt::format("checkpoint wait={} kill={} inode={}\n", wait ? 1 : 0,
                                  kill ? 1 : 0, inode_of(s.get()));
    if (::send(s.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
      throw SysError("send to " + path, errno);
    if (!wait) return std::nullopt;
    std::string answer;
    char c;
    ssize_t n;
    while ((n = ::read(s.get(), &c, 1)) == 1 && c != '\n') answer += c;
    if (n < 0 && errno == EINTR) continue;
    if (answer.starts_with("ok ")) return std::stoi(answer.substr(3));
    if (answer.starts_with("error ")) throw Error("the checkpoint failed: " + answer.substr(6));
    if (std::chrono::steady_clock::now() >= deadline)
      throw Error("snap run closed the connection without an answer");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace snap::job
