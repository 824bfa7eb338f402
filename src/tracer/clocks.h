// The clocks a job reads that count from the node's boot (CLOCK_MONOTONIC,
// CLOCK_BOOTTIME), and the time namespace offsets that move them.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "image/checkpoint.h"

namespace snap {

struct ClockOffsets {
  int64_t monotonic_ns = 0, boottime_ns = 0;
};

// The offsets of the time namespace `pid`'s children are made in, from the
// host's clocks (/proc/PID/timens_offsets); zeros where the kernel has no
// time namespaces; nullopt where the file cannot be read.
std::optional<ClockOffsets> time_namespace_offsets(pid_t pid);

// `pid`'s clocks now, as it reads them (snap's own, moved by the
// difference between its time namespace and snap's). Nullopt where its
// namespace cannot be told.
std::optional<image::JobClocks> clocks_of(pid_t pid);

// A new time namespace for the caller's children to come, whose clocks
// read `want` now. False, with why in *why, where the kernel or snap's
// privileges do not allow one.
bool make_time_namespace(const image::JobClocks& want, std::string* why);

}  // namespace snap
