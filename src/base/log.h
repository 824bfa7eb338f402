// Verbose logging (-v) to stderr. Off unless a command turns it on.
#pragma once

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

}  // namespace snap
