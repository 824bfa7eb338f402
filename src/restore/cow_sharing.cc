#include "restore/cow_sharing.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fmt/core.h>

#include "base/error.h"
#include "base/scoped_fd.h"
#include "restore/tree.h"
#include "tracer/proc.h"

namespace snap::restore {

namespace {

using image::kPageSize;
using image::Mapping;
using image::MappingKind;
using image::PagePiece;

// Private memory that a fork could have shared, anonymous (or heap) or of a
// file, and that comes back as such a plain mapping: no shm object,
// deleted file, guard regions or droppable memory of its own to remake.
bool may_share(const Mapping& m) {
  if (m.shared || image::is_shm_object(m) || m.ghost || m.all_pages || !m.guards.empty()) return false;
  if (image::has_vmflag(m.vmflags, "dp") || m.pages_dumped == 0) return false;
  if (m.kind == MappingKind::File)
    return m.path.starts_with("/") && !m.path.ends_with(" (deleted)");
  if (m.kind != MappingKind::Anonymous && m.kind != MappingKind::Heap) return false;
  return m.path.empty() || m.path == "[heap]" || m.path.starts_with("[anon:");
}

// Whether two mappings of one range are of the same memory: both anonymous
// (or heap), or the same part of the same file.
bool same_kind(const Mapping& a, const Mapping& b) {
  if ((a.kind == MappingKind::File) != (b.kind == MappingKind::File)) return false;
  return a.kind != MappingKind::File ||
         (a.path == b.path && a.pgoff == b.pgoff && a.dev == b.dev && a.inode == b.inode);
}

// The saved source of one page: not saved (fresh anonymous memory reads
// zeros, a file mapping the file), saved as zeros, or a slot of a block of
// the page store. In anonymous memory a zero page is one not saved.
struct PageSource {
  enum State : uint8_t { kAbsent, kZero, kData } state = kAbsent;
  image::BlockId block;
  uint32_t slot = 0;
  bool operator==(const PageSource& o) const {
    return state == o.state && (state != kData || (block == o.block && slot == o.slot));
  }
};

// The pieces of one mapping, read page by page in address order.
class PieceCursor {
 public:
  PieceCursor(const image::ImageReader& img, pid_t pid, const Mapping& m)
      : zero_is_absent_(m.kind != MappingKind::File) {
    img.for_each_piece(pid, m.start, [&](const PagePiece& pc) { pieces_.push_back(pc); });
  }
  // `addr` and those after it only (the cursor moves on).
  PageSource at(uint64_t addr) {
    skip_to(addr);
    if (i_ == pieces_.size() || pieces_[i_].addr > addr) return {};
    const PagePiece& pc = pieces_[i_];
    if (pc.kind == PagePiece::kZero)
      return {zero_is_absent_ ? PageSource::kAbsent : PageSource::kZero, {}, 0};
    uint32_t k = static_cast<uint32_t>((addr - pc.addr) / kPageSize);
    return {PageSource::kData, pc.block, pc.kind == PagePiece::kSeq ? pc.slot + k : pc.slot};
  }
  // The first page from `addr` on that a piece covers; `end` if none (a
  // reservation of terabytes is walked by its saved pages, not its size).
  uint64_t next_saved(uint64_t addr, uint64_t end) {
    skip_to(addr);
    return i_ == pieces_.size() ? end : std::max(addr, pieces_[i_].addr);
  }

 private:
  void skip_to(uint64_t addr) {
    while (i_ < pieces_.size() && pieces_[i_].addr + uint64_t{pieces_[i_].npages} * kPageSize <= addr)
      i_++;
  }

  const bool zero_is_absent_;
  std::vector<PagePiece> pieces_;
  size_t i_ = 0;
};

// Compares a child's mapping with its parent's, page by page: the pages
// the child must write over the parent's, the ranges it must empty, and
// how many pages they share.
struct Comparison {
  InheritedMapping child;
  uint64_t shared = 0;
};

// The page at `addr`, from `src`: a piece of its own, or joined to the last.
void add_piece(std::vector<PagePiece>& v, uint64_t addr, const PageSource& src) {
  if (!v.empty()) {
    PagePiece& last = v.back();
    const bool next = last.addr + uint64_t{last.npages} * kPageSize == addr;
    if (next && src.state == PageSource::kZero && last.kind == PagePiece::kZero) {
      last.npages++;
      return;
    }
    if (next && src.state == PageSource::kData && last.kind == PagePiece::kSeq &&
        last.block == src.block && last.slot + last.npages == src.slot) {
      last.npages++;
      return;
    }
  }
  PagePiece pc;
  pc.addr = addr;
  pc.npages = 1;
  pc.kind = src.state == PageSource::kZero ? PagePiece::kZero : PagePiece::kSeq;
  pc.slot = src.slot;
  pc.block = src.block;
  v.push_back(pc);
}

Comparison compare(const image::ImageReader& img, pid_t parent, pid_t child, const Mapping& m) {
  Comparison out;
  PieceCursor theirs(img, parent, m), own(img, child, m);
  auto& zero = out.child.zero;
  for (uint64_t a = m.start;; a += kPageSize) {
    a = std::min(theirs.next_saved(a, m.end), own.next_saved(a, m.end));  // not saved in both: same
    if (a >= m.end) break;
    const PageSource p = theirs.at(a), c = own.at(a);
    if (p == c) {
      out.shared += c.state == PageSource::kData;
      continue;
    }
    if (c.state == PageSource::kAbsent) {
      // Dropped, the page reads as fresh memory does: zeros, or the file's.
      if (!zero.empty() && zero.back().second == a)
        zero.back().second += kPageSize;
      else
        zero.push_back({a, a + kPageSize});
      continue;
    }
    add_piece(out.child.writes, a, c);  // zeros of a file mapping are written too
  }
  return out;
}

// Parked ranges go 2 MiB apart (whole huge pages, and never merged with a
// neighbour), outside every range of `used`.
class ParkingLot {
 public:
  explicit ParkingLot(std::vector<std::pair<uint64_t, uint64_t>> used) : used_(std::move(used)) {
    std::sort(used_.begin(), used_.end());
  }
  uint64_t take(uint64_t len) {
    constexpr uint64_t kAlign = uint64_t{2} << 20;
    auto up = [&](uint64_t a) { return (a + kAlign - 1) & ~(kAlign - 1); };
    uint64_t cand = next_;
    for (const auto& [s, e] : used_) {
      if (e + kAlign <= cand) continue;
      if (cand + len + kAlign <= s) break;
      cand = std::max(cand, up(e + kAlign));
    }
    if (cand + len >= kTop)
      throw Error("no free address range to restore the memory the job's processes shared");
    next_ = up(cand + len + kAlign);
    return cand;
  }

 private:
  static constexpr uint64_t kTop = 0x7ff000000000ull;
  std::vector<std::pair<uint64_t, uint64_t>> used_;
  uint64_t next_ = 0x20000000;  // above the usual non-PIE text and mmap_min_addr
};

}  // namespace

const std::vector<ParkedRange>& CowPlan::parked_by(pid_t pid) const {
  static const std::vector<ParkedRange> none;
  auto it = parked_.find(pid);
  return it == parked_.end() ? none : it->second;
}

const std::map<uint64_t, InheritedMapping>* CowPlan::inherited_by(pid_t pid) const {
  auto it = inherited_.find(pid);
  return it == inherited_.end() ? nullptr : &it->second;
}

std::string CowPlan::summary() const {
  size_t ranges = 0;
  for (const auto& [pid, v] : parked_) ranges += v.size();
  return fmt::format("{} range(s) of memory forked processes shared, {} MiB shared by {} process(es)",
                     ranges, (shared_pages_ * kPageSize) >> 20, inherited_.size());
}

CowPlan plan_cow_sharing(const image::Checkpoint& ckpt, const image::ImageReader& img,
                         const TreePlan& tree) {
  CowPlan plan;
  if (ckpt.processes.size() < 2) return plan;
  std::vector<std::pair<uint64_t, uint64_t>> used;
  for (const auto& p : ckpt.processes)
    for (const auto& m : p.mappings) used.push_back({m.start, m.end});
  for (const auto& m : proc::read_mappings(::getpid(), proc::MapDetail::kRangesOnly))
    used.push_back({m.start, m.end});
  ParkingLot lot(std::move(used));
  std::map<std::pair<pid_t, uint64_t>, uint64_t> park_of;  // (owner, mapping start) -> park

  // Parents come before their children in the image: a process's own
  // inheritance is settled before its children look at its ranges.
  for (const auto& c : ckpt.processes) {
    if (c.zombie || c.pid == tree.root) continue;
    const image::Process& parent = *tree.node(c.ppid).proc;
    std::map<std::pair<uint64_t, uint64_t>, const Mapping*> theirs;
    for (const auto& m : parent.mappings)
      if (may_share(m)) theirs[{m.start, m.end}] = &m;
    for (const auto& m : c.mappings) {
      if (!may_share(m)) continue;
      auto it = theirs.find({m.start, m.end});
      if (it == theirs.end() || !same_kind(m, *it->second)) continue;
      Comparison cmp = compare(img, parent.pid, c.pid, m);
      if (cmp.shared < CowPlan::kMinSharedPages) continue;
      // The parent's range is parked once, for all its children.
      auto& parked = plan.parked_[parent.pid];
      auto [at, fresh] = park_of.try_emplace({parent.pid, m.start}, 0);
      if (fresh) {
        if (parked.size() == CowPlan::kMaxParked) {
          park_of.erase(at);
          continue;
        }
        at->second = lot.take(m.end - m.start);
        parked.push_back({at->second, it->second});
      }
      // A parent that takes this range from its own parent keeps that one
      // (shared further up); else it takes its own parked range back.
      plan.inherited_[parent.pid].try_emplace(m.start, InheritedMapping{at->second, {}, {}});
      cmp.child.park = at->second;
      plan.inherited_[c.pid].emplace(m.start, std::move(cmp.child));
      plan.shared_pages_ += cmp.shared;
    }
  }
  return plan;
}

std::string map_parked_ranges(const std::vector<ParkedRange>& ranges) {
  for (const auto& r : ranges) {
    const Mapping& m = *r.m;
    const uint64_t len = m.end - m.start;
    int flags = MAP_PRIVATE | MAP_FIXED_NOREPLACE;
    if (image::has_vmflag(m.vmflags, "nr")) flags |= MAP_NORESERVE;
    if (image::has_vmflag(m.vmflags, "gd")) flags |= MAP_GROWSDOWN;
    ScopedFd fd;
    if (m.kind == MappingKind::File) {
      fd = ScopedFd(::open(m.path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd)
        return fmt::format("open {} to map it where its children find it: {}", m.path,
                           std::strerror(errno));
    } else {
      flags |= MAP_ANONYMOUS;
    }
    void* at = ::mmap(reinterpret_cast<void*>(r.park), len, PROT_READ | PROT_WRITE, flags, fd.get(),
                      fd ? static_cast<off_t>(m.pgoff) : 0);
    if (at == MAP_FAILED)
      return fmt::format("mmap of {} KiB at {:#x} for the memory of {:#x}-{:#x} {} its children "
                         "share: {}", len >> 10, r.park, m.start, m.end,
                         m.path.empty() ? "(anonymous)" : m.path, std::strerror(errno));
  }
  return {};
}

ParkedSignals::ParkedSignals(const CowPlan& cow, const image::Checkpoint& ckpt, int above) {
  for (const auto& p : ckpt.processes) {
    if (cow.parked_by(p.pid).empty()) continue;
    int ends[2];
    if (::pipe2(ends, O_CLOEXEC) < 0) throw SysError("pipe2", errno);
    ScopedFd low_read(ends[0]), low_write(ends[1]);
    ScopedFd r(::fcntl(low_read.get(), F_DUPFD_CLOEXEC, above));
    ScopedFd w(::fcntl(low_write.get(), F_DUPFD_CLOEXEC, above));
    if (!r || !w) throw SysError("fcntl(F_DUPFD_CLOEXEC)", errno);
    read_fds_[p.pid] = r.get();
    read_[p.pid] = std::move(r);
    write_[p.pid] = std::move(w);
  }
}

void ParkedSignals::go(pid_t pid) {
  auto w = write_.find(pid);
  if (w == write_.end())
    throw Error(fmt::format("pid {} reported memory to share it has none of", pid));
  if (::write(w->second.get(), "g", 1) != 1)
    throw SysError(fmt::format("telling pid {} that the memory its children share is there", pid),
                   errno);
}

}  // namespace snap::restore
