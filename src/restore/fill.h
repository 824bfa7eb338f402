// Filling a restored process's memory from the image at the disk's speed:
// each block of the page store is read once, by worker threads that check
// and decompress it and write its pages straight from the block buffer into
// the process (UFFDIO_COPY where a PageCopier covers them, else
// process_vm_writev with iovec arrays), while the others read on.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "base/cpus.h"
#include "image/checkpoint.h"
#include "image/image_reader.h"
#include "restore/cow_sharing.h"
#include "tracer/mempolicy.h"

namespace snap::restore {

struct FillOptions {
  // Workers (`snap restore --jobs`); each is two threads, one reading
  // while the other writes (fill.cc).
  unsigned jobs = usable_cpus();
  // The process's NUMA memory policy (mempolicy_here): the pages are
  // allocated by snap's threads as they write them, under this policy
  // where a mapping has none of its own, so they land where the job's
  // policy would have put them (not where snap runs).
  std::optional<MemPolicy> placement;
};

// [vdso], [vvar], [vvar_vclock], [vsyscall]: the kernel's, never created.
bool is_kernel_mapping(image::MappingKind k);

// Whether mapping `m` gets its saved pages written by fill_memory(): it has
// dumped pages and is not a shared memory object (those get theirs through
// their memfd) nor a mapping of the kernel's ([vdso], [vvar] ...). It must
// exist and be writable when fill_memory() runs.
bool fill_writes(const image::Mapping& m);

// Writes every saved page of every mapping of `p` that gets content
// (fill_writes) into `pid`, a stopped process whose mappings already exist.
// Zero pages are written only where memory does not start as zeros (file
// and shared mappings), not in fresh private anonymous memory. Returns the
// bytes written. Pages in the mappings `copier` (if any) covers go through
// it. A mapping in `inherited` (by its start) holds the pages of the range
// it was moved from: only its `writes` are written. Throws snap::Error
// naming the file and block on damaged data (and SysError naming pid and
// address when a write fails), before the job has run any of its own code;
// no thread outlives the call.
class PageCopier;
uint64_t fill_memory(pid_t pid, const image::Process& p, image::ImageReader& img,
                     const FillOptions& opts, const PageCopier* copier = nullptr,
                     const std::map<uint64_t, InheritedMapping>* inherited = nullptr);

// Writes the saved pages of `p`'s mappings into the ranges of `pid` (a
// skeleton) where they are parked: each pair a mapping of `p` and the
// address its first page goes to. Zero pages are not written (the ranges
// are fresh anonymous memory). Returns the bytes written; throws as
// fill_memory.
uint64_t fill_parked(pid_t pid, const image::Process& p,
                     const std::vector<std::pair<const image::Mapping*, uint64_t>>& ranges,
                     image::ImageReader& img, const FillOptions& opts);

// Writes the saved pages of `mappings` (by the pid they are saved under),
// all of one shared memory object, into `fd`, a fresh file of the object's
// size, each at its offset in the object, with the same workers. Zero pages
// are not written. Returns the bytes written; throws as fill_memory.
uint64_t fill_file(int fd, const std::vector<std::pair<pid_t, const image::Mapping*>>& mappings,
                   image::ImageReader& img, const FillOptions& opts);

}  // namespace snap::restore
