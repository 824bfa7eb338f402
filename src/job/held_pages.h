// Pages a leave-running dump reads while the job is stopped (what its
// copy-on-write snapshot cannot show: shared memory, thread stacks and
// sparse reservations kept out of it; everything when the kernel refuses
// the snapshot), held in snap's memory and stored once the job runs again:
// hashing and compressing them is then no part of the job's freeze. What
// does not fit in the bound is stored at once, as before.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "base/huge_buffer.h"
#include "tracer/memory.h"

namespace snap::job {

class HeldPages {
 public:
  // Reserves `max_bytes` of address space, backed by huge pages where the
  // kernel gives them: filling it faults once per 2 MiB. The first
  // `warm_bytes` are faulted in now, before the job is stopped: a huge
  // page's fault may have to compact memory first, milliseconds here.
  HeldPages(size_t max_bytes, size_t warm_bytes);

  // A sink that holds each run of pages it gets, as `owner`'s, while the
  // bound has room, and passes it on to `next` once it has not. Reader
  // threads call it concurrently.
  PageSink sink(pid_t owner, PageSink next);

  // Every run held, to `store` (with its owner as the pid), in the order
  // they came; then none is held.
  void store_all(const PageSink& store);

  size_t bytes_held() const;
  size_t bytes_passed_on() const;

 private:
  struct Run {
    pid_t owner;
    uint64_t mapping_start, addr;
    size_t npages, offset;
  };
  mutable std::mutex mu_;
  HugeBuffer buf_;
  size_t used_ = 0, passed_ = 0;
  std::vector<Run> runs_;
};

}  // namespace snap::job
