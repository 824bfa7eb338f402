// Memory a parent and the children it forked shared copy-on-write at the
// dump (a Python pool forked after loading its data, preforked workers)
// comes back shared, one copy for all, not one per process: only fork
// shares a private page between processes, so the parent's skeleton maps
// such memory, at an address no process of the image uses (it is "parked"
// there), and snap fills it with the parent's saved pages before the
// skeleton forks its children. Each process then moves the parked range to
// the mapping's address (mremap) and writes over it only the pages it had
// of its own.
//
// Mappings qualify when the parent and the child each have a private
// mapping of the same range, anonymous (or heap) or of the same file, and
// at least kMinSharedPages of its saved pages the same in both (the same
// page of the page store: deduplicated, equal pages are one); at most
// kMaxParked ranges a process.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"
#include "image/image_reader.h"

namespace snap::restore {

struct TreePlan;

// A range the skeleton of its owner maps before forking its children.
struct ParkedRange {
  uint64_t park = 0;                   // where, in every skeleton below it
  const image::Mapping* m = nullptr;   // the owner's mapping it becomes
};

// How one process's mapping comes from a parked range it holds.
struct InheritedMapping {
  uint64_t park = 0;
  // Pages to write over the parked ones: where this process's saved page is
  // another than the owner's (none for the owner itself).
  std::vector<image::PagePiece> writes;
  // [start, end) ranges to drop (MADV_DONTNEED): not saved in this process
  // (zeros, or the file's bytes), saved in the owner.
  std::vector<std::pair<uint64_t, uint64_t>> zero;
};

class CowPlan {
 public:
  static constexpr uint64_t kMinSharedPages = 1;
  static constexpr size_t kMaxParked = 1024;

  // The ranges `pid`'s skeleton parks (its saved pid), empty if none.
  const std::vector<ParkedRange>& parked_by(pid_t pid) const;
  // `pid`'s mappings that come from parked ranges, by their start; nullptr
  // if none.
  const std::map<uint64_t, InheritedMapping>* inherited_by(pid_t pid) const;
  bool empty() const { return parked_.empty(); }
  // "N range(s), M MiB shared by K process(es)", for -v.
  std::string summary() const;

 private:
  friend CowPlan plan_cow_sharing(const image::Checkpoint&, const image::ImageReader&,
                                  const TreePlan&);
  std::map<pid_t, std::vector<ParkedRange>> parked_;
  std::map<pid_t, std::map<uint64_t, InheritedMapping>> inherited_;
  uint64_t shared_pages_ = 0;
};

// Which mappings of the image come back shared, and where they are parked:
// addresses outside every mapping of every process of the image and of
// snap itself (the skeletons begin as copies of snap).
CowPlan plan_cow_sharing(const image::Checkpoint& ckpt, const image::ImageReader& img,
                         const TreePlan& tree);

// In a skeleton: maps its parked ranges, empty (MAP_FIXED_NOREPLACE).
// Empty, or what failed.
std::string map_parked_ranges(const std::vector<ParkedRange>& ranges);

// The pipes on which snap tells each skeleton that parks ranges that it
// has filled them, made above fd `above` (above every fd of the job).
class ParkedSignals {
 public:
  ParkedSignals(const CowPlan& cow, const image::Checkpoint& ckpt, int above);
  // The read ends, by saved pid, for the skeletons to wait on ('g').
  const std::map<pid_t, int>& read_ends() const { return read_fds_; }
  // Once the skeletons hold them.
  void close_read_ends() { read_.clear(); }
  // Tells `pid` its ranges are filled. Throws naming it.
  void go(pid_t pid);
  void close() { write_.clear(); }

 private:
  std::map<pid_t, ScopedFd> read_, write_;
  std::map<pid_t, int> read_fds_;
};

}  // namespace snap::restore
