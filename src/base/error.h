// Errors carry their context (which pid, which mapping, which syscall, errno)
// up to cmd/main.cc, the one place that prints them for the user.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>

namespace snap {

// A failure the user can act on. `hint` says what to do about it.
class Error : public std::runtime_error {
 public:
  explicit Error(std::string what, std::string hint = {})
      : std::runtime_error(std::move(what)), hint_(std::move(hint)) {}
  const std::string& hint() const { return hint_; }

 private:
  std::string hint_;
};

// A failed system call: "ptrace(PTRACE_SEIZE, 1234): Operation not permitted".
class SysError : public Error {
 public:
  SysError(const std::string& call, int err, std::string hint = {});
  int err() const { return err_; }

 private:
  int err_;
};

// Throws SysError(call, errno) when rc < 0; returns rc otherwise.
long check_sys(long rc, const std::string& call);

}  // namespace snap
