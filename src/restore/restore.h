// Restoring one process from an image: the skeleton, its files, its memory,
// its thread, and the jump back into the saved context.
#pragma once

#include <sys/types.h>

#include "image/checkpoint.h"
#include "image/image_reader.h"
#include "restore/spawn.h"

namespace snap::restore {

struct RestoreOptions {
  bool allow_changed_files = false;
};

// Brings `p` back as a child of the caller, with its saved pid, and lets it
// run. Returns that pid. Throws Error (and leaves nothing running) when any
// step fails.
pid_t restore_process(image::ImageReader& img, const image::Process& p, PidSpawner& spawner,
                      const RestoreOptions& opts);

}  // namespace snap::restore
