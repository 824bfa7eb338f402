#include "job/incremental.h"

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "job/dump.h"
#include "tracer/remote.h"

namespace snap::job {

namespace {

bool ended(int pidfd) {
  pollfd p{pidfd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

}  // namespace

void Incremental::scan(SeizedTree& tree, const image::Checkpoint& ckpt,
                       std::optional<uint64_t> base) {
  reports_.clear();
  processes_ = tree.processes().size();
  const bool usable = base && baseline_ && *base == *baseline_;
  std::map<pid_t, Tracked> still;
  for (size_t i = 0; i < tree.processes().size(); i++) {
    auto& proc = tree.processes()[i];
    const auto& mappings = ckpt.processes[i].mappings;
    try {
      auto it = tracked_.find(proc.pid);
      if (it != tracked_.end() && !ended(it->second.pidfd.get())) {
        auto reports = it->second.tracker.scan_and_rearm(mappings);
        if (usable) reports_[proc.pid] = std::move(reports);
        still.emplace(proc.pid, std::move(it->second));
        continue;
      }
      if (!WriteTracker::supported().ok) continue;
      ScopedFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, proc.pid, 0)));
      if (!pidfd) throw SysError(fmt::format("pidfd_open(pid {})", proc.pid), errno);
      RemoteSyscalls rs(*proc.tasks[0], find_syscall_site(proc.pid));
      still.emplace(proc.pid, Tracked{std::move(pidfd), WriteTracker::arm(rs, mappings)});
    } catch (const Error& e) {
      if (!warned_) warn("pid {}: write tracking unavailable, its pages are read in full: {}", proc.pid, e.what());
      warned_ = true;
    }
  }
  tracked_ = std::move(still);
}

PageChooser Incremental::chooser(pid_t pid, DumpSink& sink) {
  auto it = reports_.find(pid);
  if (it == reports_.end()) return {};
  const auto* reports = &it->second;
  return [reports, pid, &sink](const image::Mapping& m) -> std::optional<std::vector<uint64_t>> {
    for (const auto& r : *reports) {
      if (r.start != m.start || r.end != m.end) continue;
      if (!r.tracked) return std::nullopt;
      // Resident and not written: as in the previous checkpoint.
      size_t w = 0;
      for (const auto& run : r.resident) {
        uint64_t a = run.start;
        while (a < run.end) {
          while (w < r.written.size() && r.written[w].end <= a) w++;
          uint64_t stop = run.end;
          if (w < r.written.size() && r.written[w].start <= a) {
            a = std::min(run.end, r.written[w].end);  // written: skip
            continue;
          }
          if (w < r.written.size()) stop = std::min(stop, r.written[w].start);
          sink.add_unchanged(pid, m.start, a, (stop - a) / image::kPageSize);
          a = stop;
        }
      }
      std::vector<uint64_t> pages;
      for (const auto& run : r.written)
        for (uint64_t a = run.start; a < run.end; a += image::kPageSize) pages.push_back(a);
      return pages;
    }
    return std::nullopt;
  };
}

std::string Incremental::method(std::optional<uint64_t> base) const {
  if (!base) return "full";
  if (reports_.empty()) return "content-hash";
  if (reports_.size() == processes_) return "uffd-wp";
  return "uffd-wp (some processes read in full)";
}

}  // namespace snap::job
