// Skeletons: the processes a restore starts from. Each is a fork of snap
// with a saved pid, made by its saved parent's skeleton (so parent, session
// and process group come out as they were), holding its saved fds. It
// forks its own children, its zombies and group helpers, reports to snap
// and waits, still running snap's code, until snap seizes it with ptrace
// and replaces that code with the job's memory.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>

#include "restore/cow_sharing.h"
#include "restore/files.h"
#include "restore/spawn.h"
#include "restore/tree.h"

namespace snap::restore {

// What a skeleton tells snap, one record per write (atomic on a pipe).
struct SkeletonReport {
  // kParked: its parked ranges are mapped (cow_sharing.h); it waits for
  // snap to fill them before forking its children.
  enum Kind : int32_t { kReady = 1, kHelperReady = 2, kFailed = 3, kParked = 4 };
  int32_t pid = 0;
  Kind kind = kFailed;
  char text[248] = {};
};
static_assert(sizeof(SkeletonReport) == 256);

struct SkeletonContext {
  const TreePlan& plan;
  const OpenFiles& files;
  PidSpawner& spawner;
  int report_fd;      // write end of the report pipe, above every target fd
  pid_t snap_pgid;    // the group of snap restore (for the root's outside group)
  const CowPlan& cow;
  // Per process that parks ranges: the read end of the pipe on which snap
  // says (one byte, 'g') that it has filled them.
  const std::map<pid_t, int>& parked_go;
};

// Body of the skeleton of live process `pid`, whose parent is `parent` (as
// the process sees it).
// Returns only on failure (after reporting it); its exit code then.
int skeleton_main(const SkeletonContext& ctx, pid_t pid, pid_t parent);

}  // namespace snap::restore
