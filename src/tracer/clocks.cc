#include "tracer/clocks.h"

#include <fcntl.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include <fmt/core.h>

#include "base/error.h"
#include "tracer/proc.h"

namespace snap {

namespace {

constexpr int64_t kNs = 1000000000;

int64_t now_ns(clockid_t id) {
  timespec t{};
  ::clock_gettime(id, &t);
  return int64_t{t.tv_sec} * kNs + t.tv_nsec;
}

// "<clock> <sec> <nsec>", nsec in [0, 1e9): how the kernel takes an offset.
std::string offset_line(const char* clock, int64_t ns) {
  int64_t sec = ns / kNs, rest = ns % kNs;
  if (rest < 0) sec -= 1, rest += kNs;
  return fmt::format("{} {} {}\n", clock, sec, rest);
}

}  // namespace

std::optional<ClockOffsets> time_namespace_offsets(pid_t pid) {
  if (::access("/proc/self/ns/time", F_OK) != 0) return ClockOffsets{};  // none on this kernel
  auto text = proc::try_read_file(fmt::format("/proc/{}/timens_offsets", pid));
  if (!text) return std::nullopt;
  ClockOffsets out;
  std::istringstream in(*text);
  std::string name;
  int64_t sec = 0, nsec = 0;
  while (in >> name >> sec >> nsec) {
    const int64_t ns = sec * kNs + nsec;
    if (name == "monotonic" || name == "1") out.monotonic_ns = ns;
    if (name == "boottime" || name == "7") out.boottime_ns = ns;
  }
  return out;
}

std::optional<image::JobClocks> clocks_of(pid_t pid) {
  const auto job = time_namespace_offsets(pid);
  const auto own = time_namespace_offsets(::getpid());
  if (!job || !own) return std::nullopt;
  return image::JobClocks{now_ns(CLOCK_MONOTONIC) - own->monotonic_ns + job->monotonic_ns,
                          now_ns(CLOCK_BOOTTIME) - own->boottime_ns + job->boottime_ns};
}

bool make_time_namespace(const image::JobClocks& want, std::string* why) {
  const auto own = time_namespace_offsets(::getpid());
  if (!own || ::access("/proc/self/ns/time", F_OK) != 0) {
    *why = "this kernel has no time namespaces";
    return false;
  }
  if (::unshare(CLONE_NEWTIME) != 0) {
    *why = fmt::format("unshare(CLONE_NEWTIME): {}", std::strerror(errno));
    return false;
  }
  // Offsets count from the host's clocks: snap's own, less its namespace's.
  const std::string text =
      offset_line("monotonic", want.monotonic_ns - (now_ns(CLOCK_MONOTONIC) - own->monotonic_ns)) +
      offset_line("boottime", want.boottime_ns - (now_ns(CLOCK_BOOTTIME) - own->boottime_ns));
  try {
    proc::write_file("/proc/self/timens_offsets", text);
  } catch (const SysError& e) {
    *why = fmt::format("{} ({})", e.what(), text.substr(0, text.size() - 1));
    return false;
  }
  return true;
}

}  // namespace snap
