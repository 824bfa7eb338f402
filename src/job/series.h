// A checkpoint directory as `snap run` uses it: the lock that makes one
// snap run its owner, the latest good checkpoint to resume from, and a dump
// sink writing the next checkpoint of its series (src/image/series.h).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "base/scoped_fd.h"
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

// The path to restore from (CKPT's latest good checkpoint), or nullopt when
// CKPT holds no checkpoint yet.
std::optional<std::string> latest_checkpoint(const std::string& ckpt_dir);

// The next checkpoint of the series in CKPT.
class SeriesSink : public DumpSink {
 public:
  static std::unique_ptr<SeriesSink> begin(const std::string& ckpt_dir, unsigned keep);
  virtual int number() const = 0;  // the checkpoint being written
};

}  // namespace snap::job
