// A checkpoint directory as `snap run` uses it: the lock that makes one
// snap run its owner, the latest good checkpoint to resume from, and a dump
// sink writing the next checkpoint of its series (src/image/series.h).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "base/scoped_fd.h"
#include "image/image_reader.h"
#include "job/dump.h"

namespace snap::job {

// Holds CKPT/run.lock (flock) for as long as it lives. Creates CKPT (0700)
// if needed. Throws Error naming the snap run that holds it.
class RunLock {
 public:
  explicit RunLock(const std::string& ckpt_dir);

 private:
  ScopedFd fd_;
};

// CKPT's newest checkpoint that opens and verifies completely (every page
// block read and checked), newest first, each one skipped with a warning
// saying why; nullopt when CKPT holds no checkpoint yet. Throws Error when
// it holds checkpoints but none is whole.
std::optional<image::ImageReader> open_latest_good(const std::string& ckpt_dir);

// The next checkpoint of the series in CKPT.
class SeriesSink : public DumpSink {
 public:
  static std::unique_ptr<SeriesSink> begin(const std::string& ckpt_dir, unsigned keep);
  virtual int number() const = 0;  // the checkpoint being written
};

}  // namespace snap::job
