// Restoring a checkpointed process tree: skeletons with the saved pids,
// parents, sessions and groups; their files; each process's memory, threads
// and signal state; and the jump back into the saved context, for every
// process of the tree at once.
#pragma once

#include <sys/types.h>

#include "image/checkpoint.h"
#include "image/image_reader.h"
#include "restore/spawn.h"

namespace snap::restore {

struct RestoreOptions {
  bool allow_changed_files = false;
};

// Brings back every process of the image, the root as a child of the
// caller, and lets them all run together. Returns the root's pid. Refuses
// (Error naming the process and the object) before creating anything when
// the image cannot come back faithfully; when a later step fails, every
// process created so far is killed and nothing of the job has run.
pid_t restore_tree(image::ImageReader& img, PidSpawner& spawner, const RestoreOptions& opts);

}  // namespace snap::restore
