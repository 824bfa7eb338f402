// Steps 3 and 4 of a dump (job/dump.h): the copy-on-write snapshots of the
// stopped job (parasite/snapshot.h, parasite/shared_snapshot.h), its memory
// read from them once it runs again, and what the snapshots confirm of
// what was read before the stop (the hints of tracer/vmflags.h and
// tracer/fd_hints.h). dump_tree calls them in order.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <vector>

#include "image/checkpoint.h"
#include "job/file_precopy.h"
#include "job/held_pages.h"
#include "job/memory_precopy.h"
#include "job/memory_budget.h"
#include "job/shared_precopy.h"
#include "parasite/shared_snapshot.h"
#include "tracer/fd_hints.h"
#include "tracer/file_view.h"
#include "tracer/memory.h"
#include "tracer/proc.h"
#include "tracer/seccomp.h"
#include "tracer/sharing.h"
#include "tracer/task.h"
#include "tracer/vmflags.h"

namespace snap::job {

// Where read pages go: the image writer (and the progress line).
using Store = std::function<void(pid_t owner, uint64_t mapping_start, uint64_t addr,
                                 const uint8_t* data, size_t npages)>;

// Pages read from wherever (the job or its snapshot) are stored as the job's.
PageSink store_as(pid_t owner, const Store& store);

// What a leave-running dump reads before it stops the job, so as to read
// less while it is stopped (tracer/vmflags.h, tracer/fd_hints.h).
struct Hints {
  proc::VmFlagsHints vmflags;
  proc::FdHints fds;
  SeccompHints seccomp;
};

// Whether every live process has a snapshot: then which fds share an open
// file description is asked of the snapshots (their fd tables are the
// job's when it was stopped) once the job runs again.
bool all_taken(const Snapshots& snapshots);

using SharedSnapshot = std::unique_ptr<parasite::SharedMemorySnapshot>;

// Step 3: a copy-on-write snapshot of each (stopped) process, and, read right
// away (into `held`, if any, stored once the job runs again), the few
// mappings a snapshot does not show as they are. A process whose snapshot
// the kernel refuses gets none (nullptr): its memory is then read here too,
// while it is still stopped, and what it took from hints is checked against
// itself. Anonymous shared memory is write-protected instead, where the
// job allows it (`shm`, parasite/shared_snapshot.h: anonymous, and the
// shared memory files on tmpfs, found through `views`), and read once it runs.
// Data files the job maps shared that `precopy` read before the stop,
// shared memory `shared_before` read before it (neither write-protected
// then), and private memory `memory` read before it: only their pages
// written since are read; the mappings of which that is little are kept
// out of the snapshot, and those pages read while the job is stopped.
Snapshots take_snapshots(SeizedTree& tree, image::Checkpoint& ckpt, const Store& store,
                         SharedMemoryPages& shared, MemoryReaders& readers, const Hints& hints,
                         HeldPages* held, SharedSnapshot& shm, const FilePrecopy& precopy,
                         const SharedPrecopy& shared_before, const MemoryPrecopy& memory,
                         const FileViews& views);

// Step 3b, the job running again: the fds taken from hints, checked
// against each snapshot (tracer/fd_hints.h).
void confirm_fd_hints(image::Checkpoint& ckpt, const Snapshots& snapshots, const Hints& hints);

// The mapping flags of each snapshot whose process took its flags from
// hints (tracer/vmflags.h), by process index. Reading a whole smaps is the
// costly part of checking them (20,000 mappings: ~40 ms), so it runs on a
// thread of its own while step 4 reads the memory; confirm_flag_hints
// checks them once both are done, before the snapshots end.
using SnapshotFlags = std::vector<std::optional<std::vector<proc::MapEntry>>>;
std::future<SnapshotFlags> read_snapshot_flags(const image::Checkpoint& ckpt,
                                               const Snapshots& snapshots, const Hints& hints);

void confirm_flag_hints(image::Checkpoint& ckpt, const Snapshots& snapshots, SnapshotFlags flags);

// Step 4c: each mapping's NUMA memory policy of its own (mbind), read from
// its process's snapshot once the pages are read and released from it (the
// kernel then has few pages to walk as it prints numa_maps; a fork keeps
// the policies), or from the stopped job with --kill. A process whose
// snapshot the kernel refused had them read while stopped (take_snapshots);
// mappings kept out of a snapshot (thread stacks, sparse reservations,
// memory read before the stop) are not in its numa_maps: theirs are read
// from the job, running again by then; MADV_DONTFORK ones get none.
void record_mempolicies(image::Checkpoint& ckpt, const Snapshots& snapshots, bool kill);

// kcmp's order of open files, asked of each process's snapshot.
FileOrder order_in_snapshots(const image::Checkpoint& ckpt, const Snapshots& snapshots);

// Step 4: every page not read yet, from the snapshots (or from the stopped
// processes themselves, with --kill, where there are no snapshots).
void read_memory(image::Checkpoint& ckpt, const Snapshots& snapshots, const Store& store,
                 SharedMemoryPages& shared, const std::function<PageChooser(pid_t)>& chooser,
                 MemoryBudget* budget, MemoryReaders& readers, parasite::SharedMemorySnapshot* shm);

}  // namespace snap::job
