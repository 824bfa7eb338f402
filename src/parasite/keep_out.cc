#include "parasite/keep_out.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstring>
#include <functional>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"
#include "parasite/parasite.h"
#include "parasite/snapshot.h"
#include "parasite/thread_guard.h"
#include "tracer/pagemap.h"
#include "tracer/proc.h"
#include "tracer/remote.h"

extern "C" {
extern const uint8_t snap_keep_out_fork_start[];
extern const uint8_t snap_keep_out_fork_end[];
}

namespace snap::parasite {

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMaxStack = 64ull << 20;
// Pages a thread stack may hold to be kept out, each and all together.
constexpr uint64_t kMaxStackHeld = 64, kMaxStacksHeld = 4096;

// The data page keep_out_fork.S reads and writes (see there).
struct SequenceHead {
  uint64_t n, end_sp, clone_rc;
};
struct SequenceEntry {
  uint64_t start, len;
  int64_t dontfork_rc, dofork_rc;
};
static_assert(sizeof(SequenceHead) == 24 && sizeof(SequenceEntry) == 32);
static_assert(sizeof(SequenceHead) + kMaxKeepOut * sizeof(SequenceEntry) <= kPage);

bool is_private_anonymous(const image::Mapping& m) {
  return m.kind == image::MappingKind::Anonymous && !MemorySnapshot::differs_in_child(m);
}

// The sparse reservations, by index in `mappings`.
std::vector<size_t> sparse_mappings(pid_t pid, const std::vector<image::Mapping>& mappings) {
  constexpr uint64_t kMinSize = 1ull << 30, kMaxHeld = 256ull << 20, kSpread = 512;
  std::vector<size_t> out;
  if (std::none_of(mappings.begin(), mappings.end(),
                   [&](const auto& m) { return m.end - m.start >= kMinSize; }))
    return out;
  // Resident + swapped bounds the pages any one mapping holds.
  auto text = proc::try_read_file("/proc/" + std::to_string(pid) + "/status");
  if (!text) return out;
  const proc::Status status = proc::parse_status(*text);
  const uint64_t held = status.rss_bytes + status.swap_bytes;
  if (held > kMaxHeld) return out;
  for (size_t i = 0; i < mappings.size(); i++) {
    const auto& m = mappings[i];
    if (is_private_anonymous(m) && !m.hugetlb_page && m.end - m.start >= kMinSize &&
        m.end - m.start >= kSpread * held)
      out.push_back(i);
  }
  return out;
}

// The threads' stacks and the guard mapping right below each, by index. A
// stack is read while the job is stopped, so one that holds more than a
// few pages (deep recursion, large automatic arrays on OpenMP threads, or a
// "stack" that is really an arena the runtime carved it from) stays in the
// snapshot: after the release its thread faults only on the few pages it
// writes, while reading it would lengthen the freeze by all it holds.
std::vector<size_t> thread_stacks(pid_t pid, const std::vector<image::Mapping>& mappings,
                                  const std::vector<uint64_t>& sps,
                                  const std::function<bool(size_t)>& stays_in) {
  std::vector<size_t> stacks;
  for (uint64_t sp : sps) {
    auto it = std::upper_bound(mappings.begin(), mappings.end(), sp,
                               [](uint64_t a, const image::Mapping& m) { return a < m.start; });
    if (it == mappings.begin()) continue;
    const size_t i = static_cast<size_t>(it - mappings.begin()) - 1;
    const auto& m = mappings[i];
    if (sp >= m.end || !is_private_anonymous(m) || m.end - m.start > kMaxStack ||
        (m.prot & PROT_WRITE) == 0 || stays_in(i))
      continue;
    stacks.push_back(i);
  }
  std::sort(stacks.begin(), stacks.end());
  stacks.erase(std::unique(stacks.begin(), stacks.end()), stacks.end());
  if (stacks.empty()) return stacks;

  std::vector<uint64_t> held;
  try {
    const std::string path = "/proc/" + std::to_string(pid) + "/pagemap";
    ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw SysError(fmt::format("open {}", path), errno);
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (size_t i : stacks) ranges.emplace_back(mappings[i].start, mappings[i].end);
    held = pagemap::held_pages(fd.get(), path, ranges);
  } catch (const std::exception& e) {  // keeping them out only shortens the freeze
    vlog("pid {}: thread stacks left in the snapshot: {}", pid, e.what());
    return {};
  }
  std::vector<size_t> out;
  uint64_t total = 0;
  size_t too_deep = 0, over_total = 0;
  for (size_t k = 0; k < stacks.size(); k++) {
    if (held[k] > kMaxStackHeld) {
      too_deep++;
      continue;
    }
    if (total + held[k] > kMaxStacksHeld) {
      over_total++;
      continue;
    }
    total += held[k];
    const size_t i = stacks[k];
    const auto& m = mappings[i];
    out.push_back(i);
    const auto& below = i > 0 ? mappings[i - 1] : m;
    if (i > 0 && below.end == m.start && below.prot == PROT_NONE && is_private_anonymous(below) &&
        below.end - below.start <= kMaxStack)  // so never a sparse reservation too
      out.push_back(i - 1);
  }
  if (too_deep + over_total > 0)
    vlog("pid {}: {} thread stack(s) left in the snapshot: {} holding more than {} KiB, {} over "
         "{} MiB for all stacks",
         pid, too_deep + over_total, too_deep, kMaxStackHeld * kPage >> 10, over_total,
         kMaxStacksHeld * kPage >> 20);
  return out;
}

// A KeepOut of the kind `flag` says (none: sparse reservations).
KeepOut kind(bool KeepOut::*flag = nullptr) {
  KeepOut k;
  if (flag) k.*flag = true;
  return k;
}

// Adjacent mappings joined into runs of `of_kind` (kind()), ascending.
std::vector<KeepOut> runs_of(const std::vector<image::Mapping>& mappings, std::vector<size_t> idx,
                             const KeepOut& of_kind) {
  std::sort(idx.begin(), idx.end());
  idx.erase(std::unique(idx.begin(), idx.end()), idx.end());
  std::vector<KeepOut> out;
  for (size_t i : idx) {
    const auto& m = mappings[i];
    if (out.empty() || out.back().end != m.start) {
      out.push_back(of_kind);
      out.back().start = m.start;
    }
    out.back().end = m.end;
    out.back().mappings.push_back(m.start);
  }
  return out;
}

}  // namespace

std::vector<KeepOut> keep_out(pid_t pid, const std::vector<image::Mapping>& mappings,
                              const std::vector<uint64_t>& thread_sps, uint64_t leader_rseq,
                              const std::vector<uint64_t>& read_before) {
  auto holds_rseq = [&](size_t i) {
    return leader_rseq >= mappings[i].start && leader_rseq < mappings[i].end;
  };
  // Hugetlb memory first: left in the snapshot, it may be lost there.
  std::vector<size_t> hugetlb;
  for (size_t i = 0; i < mappings.size(); i++)
    if (mappings[i].hugetlb_page && is_private_anonymous(mappings[i])) hugetlb.push_back(i);
  std::vector<KeepOut> out = runs_of(mappings, hugetlb, kind(&KeepOut::hugetlb));
  std::vector<bool> chosen(mappings.size());
  for (size_t i : hugetlb) chosen[i] = true;
  std::vector<size_t> sparse = sparse_mappings(pid, mappings);
  std::erase_if(sparse, holds_rseq);
  for (auto& r : runs_of(mappings, sparse, kind())) {
    if (out.size() >= kMaxKeepOut) break;
    out.push_back(std::move(r));
  }
  if (out.size() > kMaxKeepOut) out.resize(kMaxKeepOut);
  for (size_t i : sparse) chosen[i] = true;
  // Disjoint from the sparse reservations: stacks and guards are at most
  // kMaxStack, reservations at least 1 GiB.
  const std::vector<size_t> stacks = thread_stacks(pid, mappings, thread_sps, holds_rseq);
  for (auto& r : runs_of(mappings, stacks, kind(&KeepOut::stacks))) {
    if (out.size() >= kMaxKeepOut) break;
    out.push_back(std::move(r));
  }
  for (size_t i : stacks) chosen[i] = true;  // those left in stay there
  std::vector<size_t> before;
  for (size_t i = 0; i < mappings.size(); i++)
    if (!chosen[i] && !holds_rseq(i) && !MemorySnapshot::differs_in_child(mappings[i]) &&
        !mappings[i].hugetlb_page &&
        std::binary_search(read_before.begin(), read_before.end(), mappings[i].start))
      before.push_back(i);
  for (auto& r : runs_of(mappings, before, kind(&KeepOut::read_before))) {
    if (out.size() >= kMaxKeepOut) break;
    out.push_back(std::move(r));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.start < b.start; });
  // Runs with nothing mapped between them: one madvise each pair.
  for (size_t k = 1; k < out.size(); k++) {
    auto next = std::lower_bound(mappings.begin(), mappings.end(), out[k - 1].end,
                                 [](const image::Mapping& m, uint64_t at) { return m.start < at; });
    out[k].after_hole = next != mappings.end() && next->start == out[k].start;
  }
  return out;
}

KeptOutClone clone_keeping_out(GuardedSyscalls& guarded, const std::vector<KeepOut>& runs) {
  const pid_t tid = guarded.rs().task().tid();
  const size_t code = static_cast<size_t>(snap_keep_out_fork_end - snap_keep_out_fork_start);
  if (runs.size() > kMaxKeepOut) throw std::logic_error("keep-out sequence too large");
  // The ranges the sequence gives madvise: runs [first, last] joined by holes.
  struct Range {
    size_t first = 0, last = 0, mappings = 0;
  };
  std::vector<Range> ranges;
  for (size_t i = 0; i < runs.size(); i++) {
    if (ranges.empty() || !runs[i].after_hole) ranges.push_back({i, i, 0});
    ranges.back().last = i;
    ranges.back().mappings += runs[i].mappings.size();
  }
  // If snap dies before the sequence starts, its two pages are all it
  // leaves in the job (shared: the child has the job's shape of mappings).
  std::vector<uint8_t> bytes(sizeof(SequenceHead) + ranges.size() * sizeof(SequenceEntry));
  SequenceHead head{ranges.size(), guarded.guard().frame().as_int(), 0};
  std::memcpy(bytes.data(), &head, sizeof head);
  for (size_t i = 0; i < ranges.size(); i++) {
    const uint64_t start = runs[ranges[i].first].start, end = runs[ranges[i].last].end;
    SequenceEntry e{start, end - start, 1, 1};
    std::memcpy(bytes.data() + sizeof head + i * sizeof e, &e, sizeof e);
  }
  bytes = guarded.run_sequence(
      "snapshot-sequence",
      {reinterpret_cast<const uint8_t*>(snap_keep_out_fork_start), code}, std::move(bytes));

  KeptOutClone out;
  std::memcpy(&head, bytes.data(), sizeof head);
  out.rc = static_cast<long>(head.clone_rc);
  if (out.rc > 0) out.child = guarded.guard().cloned().value_or(static_cast<pid_t>(out.rc));
  for (size_t i = 0; i < ranges.size(); i++) {
    SequenceEntry e;
    std::memcpy(&e, bytes.data() + sizeof head + i * sizeof e, sizeof e);
    const Range& r = ranges[i];
    // ENOMEM: holes in the range (every mapping was done); the same error
    // twice: DOFORK stopped where DONTFORK did, having undone the rest.
    const bool holes = r.last > r.first;
    auto done = [&](int64_t rc) { return rc == 0 || (holes && rc == -ENOMEM); };
    if (!done(e.dofork_rc) && e.dofork_rc != e.dontfork_rc) {
      if (out.child > 0) {  // born stopped and traced: never run
        ::kill(out.child, SIGKILL);
        while (::waitpid(out.child, nullptr, __WALL) < 0 && errno == EINTR) {}
      }
      throw SysError(fmt::format("pid {}: madvise(MADV_DOFORK) on {:#x}-{:#x} after the snapshot",
                                 tid, runs[r.first].start, runs[r.last].end),
                     static_cast<int>(-e.dofork_rc));
    }
    if (!done(e.dontfork_rc) && r.mappings == 1) continue;  // not kept out: in the child as usual
    out.ranges++;
    for (size_t k = r.first; k <= r.last; k++) {
      out.kept_out.insert(out.kept_out.end(), runs[k].mappings.begin(), runs[k].mappings.end());
      (runs[k].hugetlb       ? out.hugetlb
       : runs[k].stacks      ? out.stacks
       : runs[k].read_before ? out.read_before
                             : out.sparse) += runs[k].mappings.size();
    }
  }
  std::sort(out.kept_out.begin(), out.kept_out.end());
  return out;
}

}  // namespace snap::parasite
