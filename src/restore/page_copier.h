// Private anonymous memory of a restored process filled with UFFDIO_COPY
// instead of process_vm_writev: the kernel allocates each page and copies
// the saved bytes into it, where a write into fresh memory first faults the
// page in and zeroes it. Here that halved (or better) the CPU time of a
// fill (2 GiB: 0.57-0.60 s against 1.16-3.6 s, alternated), so the
// restore of incompressible memory waits on the disk, not on faults.
//
// The context is the process's own (uffd::create_in, UFFD_USER_MODE_ONLY,
// which any user may create), registered in missing mode on the mappings
// the fill writes, and lives only for the fill: nothing of the process runs
// meanwhile, and closing it (the destructor) unregisters every mapping
// before the process runs or gets more system calls.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "base/remote_ptr.h"
#include "base/scoped_fd.h"
#include "image/checkpoint.h"
#include "restore/cow_sharing.h"

namespace snap {
class RemoteSyscalls;
}

namespace snap::restore {

class RemoteWriter;

class PageCopier {
 public:
  // A context for the mappings of `p` worth one (private anonymous, enough
  // saved pages, no huge-page advice, not locked), registered in `pid`, the
  // stopped process `rs` drives, whose mappings exist. Mappings starting at
  // an address in `skip` are left out (those holding pages already, moved
  // from a parked range: a copy would find most of their pages there).
  // nullptr where there is none, or the kernel refuses (then -v says why,
  // and the fill writes as before).
  static std::unique_ptr<PageCopier> open(RemoteSyscalls& rs, pid_t pid, const image::Process& p,
                                          const std::map<uint64_t, InheritedMapping>* skip = nullptr);
  // With a context of snap's own making, registered on `ranges` (sorted,
  // disjoint); for tests.
  PageCopier(ScopedFd uffd, pid_t pid, std::vector<std::pair<uint64_t, uint64_t>> ranges);

  // Whether `addr` lies in a registered mapping: then a copy to it (within
  // that mapping) goes through copy().
  bool covers(remote_addr addr) const;
  // Copies `bytes` (whole pages, in one registered mapping) from `src` to
  // `dst`. A page that is there already (the kernel says EEXIST) is written
  // through `fallback` instead, which the caller flushes. Returns the bytes
  // the kernel copied. Throws SysError naming pid and address.
  uint64_t copy(const uint8_t* src, remote_addr dst, uint64_t bytes, RemoteWriter& fallback) const;
  // Bytes copied by all copy() calls so far.
  uint64_t copied() const { return copied_.load(std::memory_order_relaxed); }

 private:
  ScopedFd uffd_;
  pid_t pid_;
  std::vector<std::pair<uint64_t, uint64_t>> ranges_;
  mutable std::atomic<uint64_t> copied_{0};
};

}  // namespace snap::restore
