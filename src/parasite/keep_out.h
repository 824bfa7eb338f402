// Mappings kept out of a copy-on-write snapshot (snapshot.h) and read from
// the stopped job instead, and the clone that keeps them out.
//
// Four kinds cost the fork more than reading them while stopped, or risk
// the snapshot's pages:
//  - sparse reservations (1 GiB or more, 512 times the process's resident
//    and swapped memory or more: a few pages spread over terabytes, as
//    AddressSanitizer, Go or CUDA's unified memory make): the fork would copy
//    a page-table page or two per present page;
//  - the stacks of the threads but the leader (each thread's stack pointer
//    in a private anonymous mapping of at most 64 MiB that holds at most 64
//    pages, 16 MiB for all stacks together, with the inaccessible guard
//    mapping right below it): shared copy-on-write, every thread the
//    dump lets go takes a fault on its own stack at once, all together on
//    the job's CPUs, before the job's main thread gets on (measured with 256
//    threads: the fork 4.2 -> 1.8 ms, the main thread's stall after it
//    21-25 -> 8 ms, scripts/bench/floor.c's threads mode with the stacks
//    kept out);
//  - private memory from the hugetlb pool (Mapping::hugetlb_page): a write
//    by the job to a page it shares with the snapshot needs a free huge
//    page for the copy, and where the pool has none the kernel takes the
//    page from the snapshot, which then could not be read.
//  - mappings read before the stop (job/memory_precopy.h) of which the job
//    wrote little since: the fork would copy the page tables of all they
//    hold (8 ms for 100 MiB of small pages here) for the few pages that
//    are still to read.
//
// They are kept out with MADV_DONTFORK around the clone, and given their
// own flag back at once. The three steps run as one sequence inside the
// job's leader (keep_out_fork.S), so that they finish even if snap dies in
// between: a stack left with MADV_DONTFORK would be missing in every later
// fork of the job, whose child would then crash in glibc (fork reclaims the
// other threads' stacks through the descriptors that live in them).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "image/checkpoint.h"

namespace snap {
class Task;
}

namespace snap::parasite {

class GuardedSyscalls;

struct KeepOut {
  uint64_t start = 0, end = 0;        // adjacent mappings joined
  std::vector<uint64_t> mappings;     // the starts of the mappings inside
  bool stacks = false;                // thread stacks and guards
  bool hugetlb = false;               // hugetlb memory
  bool read_before = false;           // read before the stop (else: sparse reservations)
  // Nothing is mapped between the run before and this one: one madvise
  // covers both (the kernel applies it to every mapping of a range with
  // holes, then says ENOMEM for the holes). A Python job's arenas, say,
  // each a mapping of its own: a few madvise where it took one each, and
  // each one two stops of the job's leader while snap steps it (bench's
  // python3 row: 28 mappings in 3 ranges; the sequence 3.4 -> 1.3 ms,
  // seize to release 11.6 -> 9.0 ms, medians of 10 dumps side by side).
  bool after_hole = false;
};

// What to keep out of the snapshot of process `pid`, stopped: `mappings`
// (sorted by start), `thread_sps` the stack pointers of its threads but the
// leader. Ascending, at most kMaxKeepOut runs (the sparse reservations
// first, then the stacks as they fit). Never a sparse reservation or stack
// that holds `leader_rseq` (the leader's rseq area, 0 if none): each time
// the child returns from a call snap has it make (releasing pages already
// read) the kernel writes there, and kills it where that area is missing. A
// "stack" can hold it where a thread runs on memory of its own (a small
// alternate signal stack, a coroutine's) that the kernel merged with the
// leader's thread-local storage.
// `read_before`: the starts of mappings read before the stop of which
// little is left to read (job/memory_precopy.h), kept out after the
// others, as they fit: the fork would copy the page tables of all they
// hold, for the few pages the job wrote since.
std::vector<KeepOut> keep_out(pid_t pid, const std::vector<image::Mapping>& mappings,
                              const std::vector<uint64_t>& thread_sps, uint64_t leader_rseq = 0,
                              const std::vector<uint64_t>& read_before = {});
inline constexpr size_t kMaxKeepOut = 120;

struct KeptOutClone {
  long rc = 0;                    // the clone's result in the job (-errno on failure)
  pid_t child = -1;               // the child, as snap sees it (rc > 0)
  std::vector<uint64_t> kept_out; // starts of the mappings the child lacks, sorted
  size_t sparse = 0, stacks = 0;  // of them: sparse reservations, thread stacks and guards,
  size_t hugetlb = 0;             // hugetlb memory,
  size_t read_before = 0;         // and memory read before the stop
  size_t ranges = 0;              // the madvise ranges that kept them out
};

// The leader (parked by `guarded`, PTRACE_O_TRACECLONE set) runs
// keep_out_fork.S on `runs`, those joined by holes (KeepOut::after_hole)
// as one range: MADV_DONTFORK on each range, clone, MADV_DOFORK on each,
// back to its own context. A range of several mappings is kept out
// whatever its MADV_DONTFORK said (one that failed part way may have
// flagged some: all are read from the job, which is right either way); a
// range of one mapping the kernel refused is in the child as usual. Throws
// if the sequence did not complete as expected (a fault, or MADV_DOFORK
// refused: named).
KeptOutClone clone_keeping_out(GuardedSyscalls& guarded, const std::vector<KeepOut>& runs);

}  // namespace snap::parasite
