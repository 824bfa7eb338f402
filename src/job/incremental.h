// Incremental checkpoints of one job (snap run): which pages each process
// wrote since the previous checkpoint of the series, found with write
// tracking (tracer/write_tracker.h) held across checkpoints, so that a
// checkpoint reads and stores only those, and refers to the previous one
// for the rest. Where the kernel cannot track writes, every page is read
// and the series' page store keeps only contents it does not hold yet
// (content hashes).
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"
#include "tracer/memory.h"
#include "tracer/task.h"
#include "tracer/write_tracker.h"

namespace snap::job {

class DumpSink;

class Incremental {
 public:
  // With the tree stopped, before its snapshots: scans the processes
  // tracked since checkpoint `base` (the one the sink refers unchanged
  // pages to) and arms tracking in the others. Never throws for tracking
  // trouble: a process it cannot track is read in full.
  void scan(SeizedTree& tree, const image::Checkpoint& ckpt, std::optional<uint64_t> base);
  // The pages to read of each mapping of `pid`: the written ones where the
  // scan knows them; the unchanged ones go to the sink as references.
  PageChooser chooser(pid_t pid, DumpSink& sink);
  // How this checkpoint found its changed pages (for the manifest).
  std::string method(std::optional<uint64_t> base) const;

  void committed(uint64_t number) { baseline_ = number; }
  void failed() { baseline_.reset(); }  // the trackers were re-armed for nothing

 private:
  struct Tracked {
    ScopedFd pidfd;  // readable once the process has ended (its pid may be reused)
    WriteTracker tracker;
  };
  std::map<pid_t, Tracked> tracked_;
  std::optional<uint64_t> baseline_;  // the checkpoint the trackers count from
  std::map<pid_t, std::vector<RangeReport>> reports_;  // this checkpoint's usable scans
  size_t processes_ = 0;
  bool warned_ = false;
};

}  // namespace snap::job
