// Verbose logging (-v) to stderr. Off unless a command turns it on.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <fmt/core.h>
#include <string_view>

namespace snap {

extern int g_verbosity;

template <typename... Args>
void vlog(fmt::format_string<Args...> fmt, Args&&... args) {
  if (g_verbosity <= 0) return;
  std::string s = fmt::format(fmt, std::forward<Args>(args)...);
  std::fprintf(stderr, "snap: %s\n", s.c_str());
}

template <typename... Args>
void warn(fmt::format_string<Args...> fmt, Args&&... args) {
  std::string s = fmt::format(fmt, std::forward<Args>(args)...);
  std::fprintf(stderr, "snap: warning: %s\n", s.c_str());
}

// For -v: how long each step of something took ("seize 0.002 s, ...").
class StepTimes {
 public:
  void step(const char* name) {
    auto now = std::chrono::steady_clock::now();
    text_ += fmt::format("{}{} {:.3f} s", text_.empty() ? "" : ", ", name,
                         std::chrono::duration<double>(now - last_).count());
    last_ = now;
  }
  const std::string& text() const { return text_; }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  std::string text_;
};

}  // namespace snap
