#include "tracer/probe_child.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <thread>

#include "base/error.h"

namespace snap::probe {

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// waitpid with a deadline. Returns the status, or nullopt when the deadline
// passed (or the pid is not ours to wait for).
std::optional<int> wait_until(pid_t pid, Clock::time_point deadline, int options) {
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, options | WNOHANG | __WALL);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return std::nullopt;
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(1ms);
  }
}

Pipe make_pipe() {
  int fds[2];
  check_sys(::pipe2(fds, O_CLOEXEC), "pipe2");
  return Pipe{ScopedFd(fds[0]), ScopedFd(fds[1])};
}

// Forks; the child runs `body` and exits with its return value (127 when it
// throws). The child never returns into the caller's code.
Child fork_child(const std::function<int()>& body) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw SysError("fork", errno);
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::alarm(kChildAlarmSeconds);
    int rc = 127;
    try {
      rc = body();
    } catch (...) {
    }
    ::_exit(rc);
  }
  return Child(pid);
}

// Child side: writes a message for the parent (best effort).
void say(int fd, const std::string& msg) {
  const char* p = msg.data();
  size_t left = msg.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// Parent side: reads until EOF (every writer gone) or the deadline.
std::string read_until_eof(int fd, Clock::time_point deadline) {
  std::string out;
  char buf[512];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// Reads exactly one byte before the deadline.
bool read_byte(int fd, char* c, Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(left.count())) != 1) return false;
  return ::read(fd, c, 1) == 1;
}

ChildOutcome run_in_child(const std::function<int(int msg_fd)>& body) {
  Pipe p = make_pipe();
  int wfd = p.w.get();
  Child c = fork_child([&] { return body(wfd); });
  p.w.reset();
  auto deadline = Clock::now() + kProbeTimeout;
  ChildOutcome out;
  out.said = trim(read_until_eof(p.r.get(), deadline));
  out.status = c.wait_exit(deadline);
  return out;
}

size_t page_size() { return static_cast<size_t>(::sysconf(_SC_PAGESIZE)); }

}  // namespace snap::probe
