// Probes run in throwaway children: forked, bounded in time, always
// reaped; and a child whose memory a probe reads (Target). Internal to
// probe.cc.
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"

namespace snap::probe {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// How long one probe may wait for its children.
constexpr auto kProbeTimeout = 3s;
// Children kill themselves (SIGALRM) after this many seconds, in case the
// parent is gone or stuck.
constexpr unsigned kChildAlarmSeconds = 10;

// `s` without trailing newlines and spaces.
std::string trim(std::string s);

// waitpid with a deadline. Returns the status, or nullopt when the deadline
// passed (or the pid is not ours to wait for).
std::optional<int> wait_until(pid_t pid, Clock::time_point deadline, int options = 0);

// A forked child process. Killed (SIGKILL) and reaped when the owner goes
// away unless it was reaped before.
class Child {
 public:
  Child() = default;
  explicit Child(pid_t pid) : pid_(pid) {}
  Child(Child&& o) noexcept : pid_(std::exchange(o.pid_, -1)) {}
  Child& operator=(Child&& o) noexcept {
    if (this != &o) {
      kill_and_reap();
      pid_ = std::exchange(o.pid_, -1);
    }
    return *this;
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { kill_and_reap(); }

  pid_t pid() const { return pid_; }

  // Waits for the child to exit; returns its wait status, or nullopt on
  // timeout (the child is then still ours and is killed on destruction).
  std::optional<int> wait_exit(Clock::time_point deadline) {
    if (pid_ < 0) return std::nullopt;
    for (;;) {
      auto st = wait_until(pid_, deadline);
      if (!st) return std::nullopt;
      if (WIFEXITED(*st) || WIFSIGNALED(*st)) {
        pid_ = -1;
        return st;
      }
      // A stop of a traced child: not an exit, keep waiting.
    }
  }

  void kill_and_reap() {
    if (pid_ < 0) return;
    ::kill(pid_, SIGKILL);
    if (!wait_exit(Clock::now() + 2s))
      warn("child {} did not die after SIGKILL; leaving it", pid_);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

struct Pipe {
  ScopedFd r, w;
};

Pipe make_pipe();

// Forks; the child runs `body` and exits with its return value (127 when it
// throws). The child never returns into the caller's code.
Child fork_child(const std::function<int()>& body);

// Child side: writes a message for the parent (best effort).
void say(int fd, const std::string& msg);

// Parent side: reads until EOF (every writer gone) or the deadline.
std::string read_until_eof(int fd, Clock::time_point deadline);

// Reads exactly one byte before the deadline.
bool read_byte(int fd, char* c, Clock::time_point deadline);

// Runs `body(msg_fd)` in a forked child and collects what it said and how it
// ended. Grandchildren that inherit msg_fd keep the pipe open until they exit.
struct ChildOutcome {
  std::optional<int> status;  // nullopt: timed out
  std::string said;
  bool exited_ok() const { return status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0; }
  std::string how() const {
    if (!status) return "timed out";
    if (WIFSIGNALED(*status)) return fmt::format("killed by signal {}", WTERMSIG(*status));
    return fmt::format("exit {}", WEXITSTATUS(*status));
  }
};

ChildOutcome run_in_child(const std::function<int(int msg_fd)>& body);

// Anonymous memory, unmapped when the owner goes away.
class Mapping {
 public:
  explicit Mapping(size_t size) : size_(size) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw SysError(fmt::format("mmap({} bytes)", size), errno);
    addr_ = static_cast<char*>(p);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { ::munmap(addr_, size_); }
  char* addr() const { return addr_; }

 private:
  char* addr_ = nullptr;
  size_t size_ = 0;
};

size_t page_size();

// A child to probe: it writes a value derived from its pid into the first of
// two pages (the second stays untouched), then serves commands: 'w' rewrites
// the first page and answers 'k'. It exits when the command pipe closes.
class Target {
 public:
  Target() : mem_(2 * page_size()) {
    Pipe cmd = make_pipe(), ack = make_pipe();
    char* page = mem_.addr();
    int cmd_r = cmd.r.get(), ack_w = ack.w.get();
    int cmd_w = cmd.w.get(), ack_r = ack.r.get();
    child_ = fork_child([=] {
      // Without the parent's ends, closing the command pipe ends the child.
      ::close(cmd_w);
      ::close(ack_r);
      volatile uint64_t* word = reinterpret_cast<volatile uint64_t*>(page);
      *word = value_for(::getpid());
      if (::write(ack_w, "r", 1) != 1) return 1;
      char c;
      while (::read(cmd_r, &c, 1) == 1) {
        *word = value_for(::getpid());
        if (::write(ack_w, "k", 1) != 1) return 1;
      }
      return 0;
    });
    cmd_w_ = std::move(cmd.w);
    ack_r_ = std::move(ack.r);
    char c = 0;
    if (!read_byte(ack_r_.get(), &c, Clock::now() + kProbeTimeout) || c != 'r')
      throw Error("probe child did not start");
  }

  pid_t pid() const { return child_.pid(); }
  // The first page (touched by the child) and the second (untouched), at the
  // same addresses in the child as here.
  uint64_t touched() const { return reinterpret_cast<uint64_t>(mem_.addr()); }
  uint64_t untouched() const { return touched() + page_size(); }
  uint64_t expected_value() const { return value_for(child_.pid()); }

  // Asks the child to write its page again; true when it answered in time.
  bool poke() {
    if (::write(cmd_w_.get(), "w", 1) != 1) return false;
    char c = 0;
    return read_byte(ack_r_.get(), &c, Clock::now() + kProbeTimeout) && c == 'k';
  }

 private:
  static uint64_t value_for(pid_t pid) { return 0x5eed'0000'0000'0000ULL ^ static_cast<uint64_t>(pid); }

  Mapping mem_;  // declared before child_: unmapped after the child is gone
  Child child_;
  ScopedFd cmd_w_, ack_r_;
};

}  // namespace snap::probe
