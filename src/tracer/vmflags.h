// Mapping flags (smaps' VmFlags) without walking the job's pages while it
// is stopped.
//
// Only /proc/PID/smaps shows VmFlags, and the kernel builds it by walking
// every page of every mapping for its counters: ~10 ms a GiB resident,
// ~60 ms for 20,000 mappings, all of it freeze. So a leave-running dump
// reads smaps just before it stops the job (hints), reads the cheap
// /proc/PID/maps while the job is stopped and takes each mapping's flags
// from an identical hint (when maps is byte for byte the hints' own mapping
// lines, as it most often is, the hint entries are taken whole: 20,000
// mappings parsed and matched while stopped cost ~5 ms), and checks them
// against the copy-on-write snapshot's smaps once the job runs again: the
// snapshot is the job at the moment of its fork, so its flags are the
// truth, but for those fork does not pass on (mlock's lo/lf, userfaultfd's
// um/uw/ui) and MADV_DONTFORK mappings, which it does not copy at all.
// Locks are checked while the job is stopped instead, against VmLck.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "image/checkpoint.h"
#include "tracer/proc.h"

namespace snap::proc {

class VmFlagsHints {
 public:
  VmFlagsHints() = default;
  // smaps of each of `pids` (a job's tree, list_tree), read now (while
  // they run). A process that appears later has no hints (its smaps is
  // then read while it is stopped).
  static VmFlagsHints read(const std::vector<pid_t>& pids);
  // `maps_text`: the mapping lines of the same smaps (parse_smaps).
  void add(pid_t pid, std::vector<MapEntry> smaps, std::string maps_text = {});

  // The hint entries of `pid`, taken out, when `maps_text` (its
  // /proc/PID/maps, read while stopped) is the text of their lines byte for
  // byte and the locked ones add up to `locked_bytes` (VmLck); else
  // nullopt, the hints unchanged. Then applied(pid) (flags want confirming).
  std::optional<std::vector<MapEntry>> take_if_same(pid_t pid, std::string_view maps_text,
                                                    uint64_t locked_bytes);

  // Gives each of `mappings` (from /proc/PID/maps, read while stopped) the
  // flags of its hint. False, with `mappings` unchanged, when a mapping has
  // no identical hint (same range, protection, sharing, offset and file) or
  // when the locked ones do not add up to `locked_bytes` (VmLck): then the
  // flags must come from smaps itself.
  bool apply(pid_t pid, std::vector<image::Mapping>& mappings, uint64_t locked_bytes);
  // How many mappings the hints cover, all processes together.
  size_t mapping_count() const;
  // The length of `pid`'s maps text in the hints (0: none).
  size_t maps_text_size(pid_t pid) const;
  // Whether apply() gave `pid` its flags (which then want confirm_vmflags).
  bool applied(pid_t pid) const { return applied_.count(pid) != 0; }

 private:
  std::map<pid_t, std::vector<MapEntry>> by_pid_;
  std::map<pid_t, std::string> maps_text_;
  std::set<pid_t> applied_;
};

// Checks and corrects the flags of `mappings` (process `pid`, flags from
// hints) with `snapshot` (the smaps of its copy-on-write snapshot, a fork
// taken while it was stopped); `read_from_job` says which mappings were read
// from the job itself rather than from the snapshot. Throws when one read
// from the snapshot is not there as it was in the job (it became
// MADV_DONTFORK or MADV_WIPEONFORK between the hints and the stop): its
// memory would be missing or zero, so the dump must not go on. A mapping
// the snapshot shows merged with a neighbour (both given the same flags
// after the mappings were read, as the write tracker's registration of a
// grown neighbour does) is there as it was.
void confirm_vmflags(pid_t pid, std::vector<image::Mapping>& mappings,
                     std::vector<MapEntry> snapshot,
                     const std::function<bool(const image::Mapping&)>& read_from_job);

// The flags of each of `mappings` (process `pid`, stopped, without a
// snapshot to confirm hinted flags with) from its smaps itself. Throws if
// a mapping is not there as it is in `mappings`.
void reread_vmflags(pid_t pid, std::vector<image::Mapping>& mappings);

}  // namespace snap::proc
