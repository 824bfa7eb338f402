// What an image holds, as one JSON document (keys: FORMAT.md, "snap info
// --json"): its processes, threads (and where each stopped), mappings,
// fds, what the processes share, the page store's statistics; and a
// series' checkpoints. `snap info` prints it or renders it as text.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "image/image_reader.h"

namespace snap::job {

using ojson = nlohmann::ordered_json;

// Steps 2 and 3 of snap info: each thread's stop site found, every fact
// gathered ("series" is null: see describe_series).
ojson describe_image(image::ImageReader& img);

// The checkpoints of the series in `ckpt` (image::list_series), oldest first.
ojson describe_series(const std::string& ckpt);

// "SIGTERM", or "SIG40" for a real-time signal.
std::string signal_name(int signo);

}  // namespace snap::job
