// `snap watch`: checkpoint a job whenever a file appears (the seeds'
// `touch signal.myfile`), then remove the file; until the job ends.
#pragma once

#include <sys/types.h>

#include <string>

namespace snap::job {

struct WatchOptions {
  std::string file;    // the file whose appearance asks for a checkpoint
  std::string dir;     // --dir: ask the snap run owning this checkpoint directory
  pid_t pid = 0;       // --pid: dump this tree ...
  std::string output;  // ... into this image directory (replaced each time)
};

// Watches (inotify, not polling) until the job ends; returns the exit code
// for `snap watch`: 0, or 1 when the job could not be watched at all.
// A checkpoint that fails is reported and the watch goes on.
int watch_file(const WatchOptions& opts);

}  // namespace snap::job
