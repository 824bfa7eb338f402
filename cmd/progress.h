// A progress line on stderr for long operations, shown only on a terminal
// and only once the operation has run for a second.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace snap::cmd {

class Progress {
 public:
  explicit Progress(std::string what)
      : what_(std::move(what)), tty_(::isatty(2)), t0_(std::chrono::steady_clock::now()) {}
  // Shown only on a terminal: callers skip gathering numbers otherwise.
  bool enabled() const { return tty_; }
  void update(uint64_t read_bytes, uint64_t written_bytes) {
    if (!tty_) return;
    auto now = std::chrono::steady_clock::now();
    double s = std::chrono::duration<double>(now - t0_).count();
    if (s < 1.0 || now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    shown_ = true;
    std::fprintf(stderr, "\r%s: %.0f MiB read, %.0f MiB written, %.0f MiB/s ", what_.c_str(),
                 static_cast<double>(read_bytes) / (1 << 20),
                 static_cast<double>(written_bytes) / (1 << 20),
                 static_cast<double>(read_bytes) / (1 << 20) / s);
  }
  void done() {
    if (shown_) std::fputs("\n", stderr);
    shown_ = false;
  }
  ~Progress() { done(); }

 private:
  std::string what_;
  bool tty_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point t0_, last_{};
};

}  // namespace snap::cmd
