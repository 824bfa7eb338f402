#include "job/memory_precopy.h"

#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <string>

#include <fmt/core.h>

#include "base/byte_ranges.h"
#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"
#include "job/dump.h"
#include "parasite/parasite.h"
#include "parasite/thread_guard.h"
#include "tracer/pagemap.h"
#include "tracer/pid_view.h"
#include "tracer/proc.h"
#include "tracer/remote.h"
#include "tracer/task.h"

namespace snap::job {

namespace {

constexpr uint64_t kPage = image::kPageSize;

// Ending the tracking, the job's page faults wait for one piece at most;
// between pieces snap waits, so that a fault waiting gets in before snap's
// next piece (with no pause, the job of 1 GiB below stalled 58-141 ms). A
// piece of 1 MiB: that job's longest stall over the whole dump 15-16 ms
// here, against 23-41 ms with pieces of 8 MiB (a 1 ms loop rewriting a page
// of 1 GiB of random data each time round, 3 dumps each). And each piece
// costs the job more than its faults: its page tables change under it
// (TLB flushes, and on a VM with shadow page tables all it touches next is
// mapped again), so the pause leaves it time to get on. With 200 us, the
// bench's python3 job (a 1 ms loop over 200 MiB of objects) ran 0.4 ms at
// a time and went round once in 15-42 ms while snap ended the tracking,
// longer than its freeze; with 1 ms, 9.6-11.6 ms, the freeze itself (and
// the 1 GiB job above 12.5-15.7 ms against 14.7-40.6; 4 and 3 fresh jobs,
// alternating). Ending then takes ~1.2 s a GiB, most of it the pauses,
// which snap's own exit need not wait for: hand_off().
constexpr uint64_t kDisarmPiece = uint64_t{1} << 20;
constexpr std::chrono::microseconds kDisarmPause{1000};

uint64_t bytes_of(const std::vector<ByteRange>& ranges) {
  uint64_t n = 0;
  for (const auto& [a, b] : ranges) n += b - a;
  return n;
}

// `m` cut into pieces of at most `most` bytes (private file mappings keep
// their offsets), for reading a check at a time.
std::vector<image::Mapping> pieces(const image::Mapping& m, uint64_t most) {
  std::vector<image::Mapping> out;
  for (uint64_t s = m.start; s < m.end; s += most) {
    image::Mapping p = m;
    p.start = s;
    p.end = std::min(m.end, s + most);
    p.pgoff = m.pgoff + (s - m.start);
    out.push_back(std::move(p));
  }
  return out;
}

// The mappings of `pid` worth reading before the stop: trackable ones
// (WriteTracker::trackable) holding at least kMinPages pages, the
// kMaxMappings that hold most. Small ones cost a fork next to nothing,
// and each mapping tracked costs a walk while the job is stopped.
std::vector<image::Mapping> candidates(pid_t pid) {
  std::vector<image::Mapping> maps;
  // /proc/PID/maps: smaps would walk every page (and hold the job's
  // mappings locked meanwhile). Without its flags a device or droppable
  // mapping may be taken: the kernel refuses to arm the first, and the
  // second is forgotten at the stop, where its flags are known.
  for (auto& m : proc::read_mappings(pid, proc::MapDetail::kRangesOnly))
    if (WriteTracker::trackable(m)) maps.push_back(std::move(m));
  if (maps.empty()) return maps;
  const std::string path = fmt::format("/proc/{}/pagemap", pid);
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw SysError("open " + path, errno);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& m : maps) ranges.emplace_back(m.start, m.end);
  const std::vector<uint64_t> held = pagemap::held_pages(fd.get(), path, ranges);
  std::vector<size_t> order;
  for (size_t i = 0; i < maps.size(); i++)
    if (held[i] >= MemoryPrecopy::kMinPages) order.push_back(i);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return held[a] > held[b]; });
  if (order.size() > MemoryPrecopy::kMaxMappings) order.resize(MemoryPrecopy::kMaxMappings);
  std::sort(order.begin(), order.end());
  std::vector<image::Mapping> out;
  for (size_t i : order) out.push_back(std::move(maps[i]));
  return out;
}

}  // namespace

MemoryPrecopy MemoryPrecopy::read(const std::vector<pid_t>& pids, DumpSink& sink,
                                  MemoryReaders& readers,
                                  const std::function<void(const image::ImageStats&)>& progress) {
  MemoryPrecopy out;
  uint64_t rewritten_pages = 0;  // written again while they were read, in all
  if (!WriteTracker::supported().ok) {
    vlog("memory is read at the stop: {}", WriteTracker::supported().reason);
    return out;
  }
  for (pid_t pid : pids) {
    std::vector<image::Mapping> maps;
    std::optional<WriteTracker> tracker;
    try {
      if (!pidview::sees_snaps_pids(pid))
        throw Error("it runs in a pid namespace of its own");
      // A system call seccomp forbids could kill the job: none is made in
      // a process under seccomp before the stop.
      if (proc::read_status(pid).seccomp != 0)
        throw Error("it runs under seccomp: no system call is made in it before the stop");
      maps = candidates(pid);
      if (maps.empty()) continue;  // nothing large enough to be worth it
      {
        auto task = Task::seize_and_stop(pid);
        parasite::GuardedSyscalls guarded(*task);
        tracker.emplace(WriteTracker::open(guarded.rs()));
      }  // it runs again
      tracker->arm_mappings(maps, true);  // no markers: cheaper to walk and to end
    } catch (const std::exception& e) {
      vlog("pid {}: its memory is read at the stop: {}", pid, e.what());
      continue;
    }
    // The armed mappings, in pieces, read a check's worth at a time.
    Process p{std::move(*tracker), {}, 0};
    const auto& armed = p.tracker.armed();
    std::map<uint64_t, uint64_t> mapping_of;  // piece start -> mapping start
    std::vector<std::vector<image::Mapping>> groups(1);
    uint64_t group_bytes = 0;
    for (const auto& m : maps) {
      if (std::find(armed.begin(), armed.end(), PageRun{m.start, m.end}) == armed.end())
        continue;  // the kernel refused it (the job's own userfaultfd's, say)
      p.given[m.start];
      for (auto& piece : pieces(m, kCheckBytes)) {
        if (group_bytes >= kCheckBytes) {
          groups.emplace_back();
          group_bytes = 0;
        }
        group_bytes += piece.end - piece.start;
        mapping_of[piece.start] = m.start;
        groups.back().push_back(std::move(piece));
      }
    }
    std::atomic<uint64_t> bytes{0};
    size_t runs = 0;  // given, in all (snap's memory: 16 bytes each)
    std::mutex mu;    // the readers' threads call the sink
    const PageSink to_sink = [&](pid_t, uint64_t piece_start, uint64_t addr, const uint8_t* data,
                                 size_t npages) {
      const uint64_t start = mapping_of.at(piece_start);
      sink.add_pages(pid, start, addr, data, npages);
      bytes += npages * kPage;
      std::lock_guard lock(mu);
      p.given.at(start).push_back({addr, addr + npages * kPage});
      runs++;
    };
    // A mapping the job unmaps or shrinks while it is read fails its read:
    // what was read of it is forgotten, and it is read at the stop.
    std::set<uint64_t> failed;
    auto read = [&](std::vector<image::Mapping>& pieces) {
      dump_memory(pid, pieces, to_sink, {}, ReadVia::kMemFile, nullptr, {}, {}, &readers);
    };
    auto drop = [&](uint64_t start, const std::string& why) {
      failed.insert(start);
      sink.forget(pid, start);
      p.given.erase(start);
      vlog("pid {}: mapping {:#x} is read at the stop: it changed while it was read ({})", pid,
           start, why);
    };
    try {
      for (auto& group : groups) {
        std::erase_if(group, [&](const image::Mapping& x) {
          return failed.count(mapping_of.at(x.start)) > 0;
        });
        const uint64_t before = bytes;
        try {
          read(group);
        } catch (const SysError&) {
          // Which one: what the group gave is forgotten, each piece read alone.
          for (const auto& x : group) {
            const uint64_t start = mapping_of.at(x.start);
            if (!p.given.count(start)) continue;
            sink.forget_pages(pid, start, {{x.start, x.end}});
            std::erase_if(p.given.at(start), [&](const ByteRange& r) {
              return r.first >= x.start && r.second <= x.end;
            });
          }
          for (const auto& x : group) {
            const uint64_t start = mapping_of.at(x.start);
            if (failed.count(start)) continue;
            std::vector<image::Mapping> one{x};
            try {
              read(one);
            } catch (const SysError& e2) {
              drop(start, e2.what());
            }
          }
        }
        if (progress) progress(sink.stats());
        if (runs > kMaxRuns) {
          vlog("pid {}: its memory is scattered in {} runs or more: the rest is read at the stop",
               pid, kMaxRuns);
          break;
        }
        // What the job wrote again of this group while it was read: a job
        // that writes faster than snap reads is read at the stop.
        std::vector<PageRun> ranges;
        for (const auto& x : group)
          if (!failed.count(mapping_of.at(x.start))) ranges.push_back({x.start, x.end});
        const uint64_t read_now = bytes - before;
        const uint64_t rewritten = p.tracker.written_pages(ranges) * kPage;
        rewritten_pages += rewritten / kPage;
        if (read_now >= kCheckBytes / 8 &&
            static_cast<double>(rewritten) > kMaxRewritten * static_cast<double>(read_now)) {
          vlog("pid {}: {:.1f} MiB of {:.1f} MiB written again while it was read: the rest of "
               "its memory is read at the stop",
               pid, static_cast<double>(rewritten) / (1 << 20),
               static_cast<double>(read_now) / (1 << 20));
          break;
        }
      }
    } catch (const std::exception& e) {
      for (const auto& [start, runs] : p.given) sink.forget(pid, start);
      vlog("pid {}: its memory is read at the stop: reading it as it ran failed: {}", pid,
           e.what());
      continue;
    }
    p.bytes = bytes;
    vlog("pid {}: {:.1f} MiB of private memory read while it ran", pid,
         static_cast<double>(p.bytes) / (1 << 20));
    out.trackers_.emplace(pid, std::move(p));
  }
  // The pages written again by the stop are read again then, most of them
  // while the job is stopped: room for them to take the places of their
  // first copies is made now.
  if (!out.trackers_.empty()) reserve_places_for(sink, rewritten_pages);
  return out;
}

void MemoryPrecopy::reserve_places_for(DumpSink& sink, uint64_t rewritten) {
  sink.reserve_places(2 * rewritten + kReservedPages);
}

size_t MemoryPrecopy::settle_heap_bytes() const {
  // A mapping's runs go through some eight lists (the walk's, what was
  // read, written, held, to read again ...), each grown by doubling.
  constexpr size_t kPerRun = 16 * sizeof(ByteRange);
  size_t runs = 0;
  for (const auto& [pid, p] : trackers_)
    for (const auto& [start, given] : p.given) runs += given.size();
  return runs * kPerRun;
}

void MemoryPrecopy::settle(const image::Checkpoint& ckpt, DumpSink& sink) {
  uint64_t left = 0;  // to read while stopped, of the mappings kept out
  for (auto& [pid, p] : trackers_) {
    const image::Process* now = nullptr;
    for (const auto& proc : ckpt.processes)
      if (proc.pid == pid && !proc.zombie) now = &proc;
    std::vector<std::optional<WriteTracker::Since>> since;
    try {
      if (now) since = p.tracker.since_armed(now->mappings);
    } catch (const std::exception& e) {
      vlog("pid {}: what was read while it ran is not used: {}", pid, e.what());
    }
    // A mapping read before the stop may have been split since (mprotect,
    // munmap of a part: the kernel keeps the registration and the pages'
    // protection in each part): what was read of a part that starts
    // elsewhere now moves to that part's mapping.
    for (auto& [start, runs] : p.given) runs = merge_ranges(std::move(runs));  // once: sorted
    for (size_t i = 0; i < since.size(); i++) {
      if (!since[i]) continue;
      const auto& m = now->mappings[i];
      std::vector<ByteRange> moved;
      for (auto& [start, runs] : p.given) {
        if (start == m.start || runs.empty() || runs.front().first >= m.end ||
            runs.back().second <= m.start)
          continue;
        auto inside = subtract_ranges(runs, {{0, m.start}, {m.end, UINT64_MAX}});
        if (inside.empty()) continue;
        sink.move_pages(pid, start, m.start, inside);
        runs = subtract_ranges(runs, inside);
        moved.insert(moved.end(), inside.begin(), inside.end());
      }
      if (!moved.empty()) {
        auto& runs = p.given[m.start];
        runs.insert(runs.end(), moved.begin(), moved.end());
      }
    }
    auto& kept = kept_[pid];
    for (size_t i = 0; i < since.size(); i++) {
      const auto& m = now->mappings[i];
      auto given = p.given.find(m.start);
      if (!since[i] || given == p.given.end()) continue;
      // Read now: what was written since; what was read but holds nothing
      // now (released since: zero); what holds state but was not read (the
      // reading stopped or failed before it; or a page first read since:
      // the zero page).
      std::vector<ByteRange> written, held;
      for (const auto& r : since[i]->written) written.push_back({r.start, r.end});
      for (const auto& r : since[i]->held) held.push_back({r.start, r.end});
      // What was given past its end (a part split off since that is not
      // tracked: read in full under its own start) is not its own.
      const auto mine = subtract_ranges(merge_ranges(std::move(given->second)),
                                        {{m.end, UINT64_MAX}});
      std::vector<ByteRange> again = subtract_ranges(mine, held);
      const auto unread = subtract_ranges(held, mine);
      again.insert(again.end(), written.begin(), written.end());
      again.insert(again.end(), unread.begin(), unread.end());
      again = merge_ranges(std::move(again));
      const uint64_t n = bytes_of(again);
      if (n > bytes_of(held) / 2) continue;  // mostly to read again: read as without this
      std::vector<ByteRange> forget = again;
      forget.push_back({m.end, UINT64_MAX});
      sink.forget_pages(pid, m.start, merge_ranges(std::move(forget)));
      std::vector<uint64_t>& pages = kept[m.start];
      for (const auto& [a, b] : again)
        for (uint64_t at = a; at < b; at += kPage) pages.push_back(at);
      bytes_again_ += n;
      bytes_before_ += bytes_of(subtract_ranges(mine, again));
      if (n * kLeftShare <= bytes_of(held) && left + n <= kLeftMax) {
        keep_out_[pid].push_back(m.start);
        left += n;
      }
    }
    for (const auto& [start, runs] : p.given)
      if (!kept.count(start)) sink.forget(pid, start);
    if (kept.empty()) kept_.erase(pid);
  }
  if (!trackers_.empty())
    vlog("memory read while the job ran: {:.1f} MiB kept, {:.1f} MiB written since or not read "
         "then, read at the stop, {:.1f} MiB of it while stopped",
         static_cast<double>(bytes_before_) / (1 << 20),
         static_cast<double>(bytes_again_) / (1 << 20), static_cast<double>(left) / (1 << 20));
}

void MemoryPrecopy::adopt(std::vector<WriteTracker> trackers) {
  for (auto& t : trackers) adopted_.push_back(std::move(t));
}

void MemoryPrecopy::end() {
  if (trackers_.empty() && adopted_.empty()) return;
  ending_trackers_ = std::make_shared<Ending>(Ending{std::move(trackers_), std::move(adopted_)});
  trackers_.clear();
  adopted_.clear();
  ending_ = std::jthread([ending = ending_trackers_](std::stop_token stop) {
    parasite::phase(ending->processes.empty() ? ending->adopted.front().pid()
                                              : ending->processes.begin()->first,
                    "memory-unprotect");
    unprotect(*ending, stop);
  });
}

bool MemoryPrecopy::unprotect(Ending& ending, std::stop_token stop) {
  for (auto& [pid, p] : ending.processes)
    if (!p.tracker.disarm(kDisarmPiece, kDisarmPause, stop)) return false;
  for (auto& t : ending.adopted)
    if (!t.disarm(kDisarmPiece, kDisarmPause, stop)) return false;
  return true;
}

MemoryPrecopy::HandedOff MemoryPrecopy::hand_off() {
  if (!ending_.joinable()) return {};
  ending_.request_stop();
  ending_.join();  // after the piece under way
  HandedOff out;
  std::vector<int> keep;  // the descriptors the child keeps: ascending
  auto count = [&](const WriteTracker& t) {
    for (const auto& r : t.armed()) out.bytes += r.end - r.start;
    if (!t.armed().empty()) keep.push_back(t.fd());
  };
  for (const auto& [pid, p] : ending_trackers_->processes) count(p.tracker);
  for (const auto& t : ending_trackers_->adopted) count(t);
  if (!out.bytes) return {};
  std::sort(keep.begin(), keep.end());
  const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  const pid_t child = ::fork();
  if (child < 0) {  // then snap waits after all
    if (null_fd >= 0) ::close(null_fd);
    ending_ = std::jthread([ending = ending_trackers_] { unprotect(*ending, {}); });
    return {};
  }
  if (child == 0) {
    // Only system calls from here (snap's other threads are gone in the
    // child, holding whatever locks they held): no allocation, no output.
    ::setsid();  // out of the terminal's job: ^C to the shell does not reach it
    if (null_fd >= 0)
      for (int fd = 0; fd < 3; fd++) ::dup2(null_fd, fd);
    int from = 3;
    for (int fd : keep) {
      if (fd > from) ::close_range(static_cast<unsigned>(from), static_cast<unsigned>(fd - 1), 0);
      from = fd + 1;
    }
    ::close_range(static_cast<unsigned>(from), ~0U, 0);
    unprotect(*ending_trackers_, {});
    ::_exit(0);
  }
  if (null_fd >= 0) ::close(null_fd);
  // snap's own copies of the descriptors close with it; the child's keep
  // the tracking (and its protection) until it has ended it.
  return {child, out.bytes};
}

std::vector<uint64_t> MemoryPrecopy::keep_out(pid_t pid) const {
  auto it = keep_out_.find(pid);
  return it == keep_out_.end() ? std::vector<uint64_t>{} : it->second;
}

std::optional<std::vector<uint64_t>> MemoryPrecopy::pages(pid_t pid,
                                                          const image::Mapping& m) const {
  auto p = kept_.find(pid);
  if (p == kept_.end()) return std::nullopt;
  auto it = p->second.find(m.start);
  if (it == p->second.end()) return std::nullopt;
  return it->second;
}

}  // namespace snap::job
