#include "tracer/write_tracker.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <fmt/core.h>

#include "base/error.h"
#include "tracer/memory.h"
#include "tracer/pagemap.h"
#include "tracer/proc.h"
#include "tracer/remote.h"
#include "tracer/task.h"
#include "tracer/userfaultfd.h"

namespace snap {

namespace {

using pagemap::kPageIsFile;
using pagemap::kPageIsPfnZero;
using pagemap::kPageIsPresent;
using pagemap::kPageIsSwapped;
using pagemap::kPageIsWritten;
using pagemap::kScanCheckWpAsync;
using pagemap::kScanWpMatching;
using PageRegion = pagemap::Region;

using uffd::enable_features;
using uffd::kFeatureWpAsync;
using uffd::kFeatureWpHugetlbfsShmem;
using uffd::kFeatureWpUnpopulated;
using uffd::offered_features;
using uffd::pidfd_getfd;
using uffd::pidfd_open;
using uffd::register_wp;
using uffd::write_protect;
constexpr int kUffdUserModeOnly = uffd::kUserModeOnly;

// The features snap asks for: async write-protect, markers on unpopulated
// pages (without them PAGEMAP_SCAN skips anonymous ranges), and hugetlbfs /
// shmem where offered.
uint64_t wanted_features(uint64_t offered) {
  return kFeatureWpAsync | kFeatureWpUnpopulated | (offered & kFeatureWpHugetlbfsShmem);
}

// protect_in_pieces: the pages protected per call, and the wait between
// calls, so that a page fault of the process waiting gets in.
constexpr uint64_t kProtectPiece = uint64_t{32} << 20;
constexpr std::chrono::microseconds kProtectPause{100};

// Appends [s, e) to `runs`, merging with the last run when adjacent.
void append_run(std::vector<PageRun>& runs, uint64_t s, uint64_t e) {
  if (!runs.empty() && runs.back().end == s) runs.back().end = e;
  else runs.push_back({s, e});
}

int pagemap_scan(int pagemap_fd, uint64_t start, uint64_t end, uint64_t flags, uint64_t mask,
                 uint64_t anyof, uint64_t ret_mask, std::vector<PageRegion>& out) {
  return pagemap::scan(pagemap_fd, start, end, flags, mask, anyof, ret_mask, out);
}

// The pages of region `r` (of mapping `m`, from a PAGEMAP_SCAN that returned
// kPageIsSwapped, and kPageIsFile for a file mapping) that hold state,
// appended to `held`: present ones (of a private file mapping, its own:
// copied on write), and swapped ones but pte markers (arming leaves them
// on unpopulated pages, zapping a protected page leaves one; PAGEMAP_SCAN
// shows both as swapped: only pagemap's entries, read in bounded chunks,
// tell them apart).
void append_held(int pagemap_fd, const std::string& path, const image::Mapping& m,
                 const PageRegion& r, std::vector<PageRun>& held) {
  if (r.categories & kPageIsSwapped) {
    pagemap::read_chunks(pagemap_fd, path, r.start, r.end,
                         [&](uint64_t at, const uint64_t* entries, size_t n) {
                           for (size_t i = 0; i < n; i++)
                             if (!is_pte_marker(entries[i])) {
                               const uint64_t a = at + i * image::kPageSize;
                               append_run(held, a, a + image::kPageSize);
                             }
                         });
  } else if (!(m.kind == image::MappingKind::File && (r.categories & kPageIsFile))) {
    append_run(held, r.start, r.end);
  }
}

// Pages of `a` that are also in `b` (both ascending and disjoint).
std::vector<PageRun> intersect(const std::vector<PageRun>& a, const std::vector<PageRun>& b) {
  std::vector<PageRun> out;
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    uint64_t s = std::max(a[i].start, b[j].start), e = std::min(a[i].end, b[j].end);
    if (s < e) append_run(out, s, e);
    if (a[i].end < b[j].end) i++;
    else j++;
  }
  return out;
}

// The thread group of a thread.
pid_t tgid_of(pid_t tid) {
  pid_t tgid = proc::read_status(tid).tgid;
  return tgid > 0 ? tgid : tid;
}

}  // namespace

bool runs_contain(const std::vector<PageRun>& runs, uint64_t addr) {
  auto it = std::upper_bound(runs.begin(), runs.end(), addr,
                             [](uint64_t a, const PageRun& r) { return a < r.end; });
  return it != runs.end() && it->start <= addr;
}

uint64_t runs_pages(const std::vector<PageRun>& runs) {
  uint64_t n = 0;
  for (const auto& r : runs) n += r.pages();
  return n;
}

bool WriteTracker::trackable(const image::Mapping& m, std::string* why) {
  auto no = [&](const char* reason) {
    if (why) *why = reason;
    return false;
  };
  using K = image::MappingKind;
  if (!mapping_has_content(m)) return no("holds no state of its own");
  if (m.shared || image::is_shm_object(m) || m.kind == K::SharedAnon)
    return no("shared memory (other processes write it through their own page tables)");
  if (m.kind != K::Anonymous && m.kind != K::Heap && m.kind != K::Stack && m.kind != K::File)
    return no("not private memory");
  if (!(m.prot & PROT_WRITE)) return no("not writable");
  if (m.end - m.start > kMaxTrackedBytes) return no("larger than the tracking limit");
  // A range the job's own userfaultfd watches is refused by UFFDIO_REGISTER
  // (EBUSY), and stays untracked.
  return true;
}

const WriteTracker::Support& WriteTracker::supported() {
  static const Support s = [] {
    Support r;
    auto fail = [&](std::string why) {
      r.ok = false;
      r.reason = std::move(why);
      return r;
    };
    const uint64_t ps = image::kPageSize;
    int flags = O_CLOEXEC | O_NONBLOCK | kUffdUserModeOnly;
    ScopedFd q(static_cast<int>(::syscall(SYS_userfaultfd, flags)));
    if (!q) return fail(fmt::format("userfaultfd(UFFD_USER_MODE_ONLY): {}", std::strerror(errno)));
    try {
      r.features = offered_features(q.get());
    } catch (const SysError& e) {
      return fail(e.what());
    }
    if (!(r.features & kFeatureWpAsync) || !(r.features & kFeatureWpUnpopulated))
      return fail("no asynchronous userfaultfd write-protect (UFFD_FEATURE_WP_ASYNC, Linux 6.7)");
    ScopedFd uffd(static_cast<int>(::syscall(SYS_userfaultfd, flags)));
    if (!uffd) return fail(fmt::format("userfaultfd: {}", std::strerror(errno)));
    try {
      enable_features(uffd.get(), wanted_features(r.features));
    } catch (const SysError& e) {
      return fail(e.what());
    }
    void* p = ::mmap(nullptr, 4 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return fail(fmt::format("mmap: {}", std::strerror(errno)));
    struct Unmap {
      void* p;
      size_t n;
      ~Unmap() { ::munmap(p, n); }
    } unmap{p, 4 * ps};
    auto* bytes = static_cast<volatile uint8_t*>(p);
    bytes[0] = 1;  // one present page, one written after arming, two untouched
    auto start = reinterpret_cast<uint64_t>(p), end = start + 4 * ps;
    if (int e = register_wp(uffd.get(), start, end))
      return fail(fmt::format("UFFDIO_REGISTER (write-protect): {}", std::strerror(e)));
    if (int e = write_protect(uffd.get(), start, end))
      return fail(fmt::format("UFFDIO_WRITEPROTECT: {}", std::strerror(e)));
    bytes[2 * ps] = 1;  // resolved by the kernel (async): does not block
    ScopedFd pm(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
    if (!pm) return fail(fmt::format("open /proc/self/pagemap: {}", std::strerror(errno)));
    for (int round = 0; round < 2; round++) {
      std::vector<PageRegion> regions;
      int e = pagemap_scan(pm.get(), start, end, kScanWpMatching | kScanCheckWpAsync,
                           kPageIsWritten, 0, kPageIsWritten, regions);
      if (e) return fail(fmt::format("PAGEMAP_SCAN: {} (needs Linux 6.7)", std::strerror(e)));
      size_t want = round == 0 ? 1 : 0;  // the second scan: re-protected, nothing written
      if (regions.size() != want ||
          (want && (regions[0].start != start + 2 * ps || regions[0].end != start + 3 * ps)))
        return fail(fmt::format("PAGEMAP_SCAN reported {} written regions, expected {}",
                                regions.size(), want));
    }
    ScopedFd self(pidfd_open(::getpid()));
    if (!self) return fail(fmt::format("pidfd_open: {} (needs Linux 5.3)", std::strerror(errno)));
    ScopedFd dup(pidfd_getfd(self.get(), uffd.get()));
    if (!dup) return fail(fmt::format("pidfd_getfd: {} (needs Linux 5.6)", std::strerror(errno)));
    r.ok = true;
    r.reason = "userfaultfd asynchronous write-protect + PAGEMAP_SCAN";
    return r;
  }();
  return s;
}

WriteTracker WriteTracker::arm(RemoteSyscalls& rs, const std::vector<image::Mapping>& mappings) {
  WriteTracker t = open(rs);
  t.arm_mappings(mappings);
  return t;
}

WriteTracker WriteTracker::open(RemoteSyscalls& rs) {
  const Support& sup = supported();
  pid_t pid = tgid_of(rs.task().tid());
  if (!sup.ok)
    throw Error(fmt::format("cannot track the writes of pid {}: {}", pid, sup.reason),
                "incremental dumps compare page contents instead");
  ScopedFd mine = uffd::create_in(rs, pid, O_CLOEXEC | O_NONBLOCK | kUffdUserModeOnly,
                                  "seccomp or an LSM may forbid it in the job: incremental dumps "
                                  "compare page contents instead");
  enable_features(mine.get(), wanted_features(sup.features));
  return WriteTracker(pid, std::move(mine));
}

void WriteTracker::arm_mappings(const std::vector<image::Mapping>& mappings, bool populated) {
  ScopedFd pm;
  if (populated) pm.reset(::open(fmt::format("/proc/{}/pagemap", pid_).c_str(), O_RDONLY | O_CLOEXEC));
  std::vector<PageRegion> regions;
  for (const auto& m : mappings) {
    // A refused range is reported untracked by the scans (with the reason).
    if (!trackable(m)) continue;
    regions.clear();
    if (!populated || !pm ||
        pagemap_scan(pm.get(), m.start, m.end, 0, 0, kPageIsPresent | kPageIsSwapped, 0, regions)) {
      if (arm_one(m.start, m.end, nullptr)) armed_.push_back({m.start, m.end});
      continue;
    }
    if (register_wp(uffd_.get(), m.start, m.end)) continue;
    bool ok = true;
    for (size_t i = 0; ok && i < regions.size();) {  // adjacent regions joined
      size_t j = i + 1;
      while (j < regions.size() && regions[j].start == regions[j - 1].end) j++;
      ok = protect_in_pieces(regions[i].start, regions[j - 1].end) == 0;
      i = j;
    }
    if (ok) {
      armed_.push_back({m.start, m.end});
    } else {
      uffdio_range r{m.start, m.end - m.start};
      ::ioctl(uffd_.get(), UFFDIO_UNREGISTER, &r);
    }
  }
  std::sort(armed_.begin(), armed_.end(),
            [](const PageRun& a, const PageRun& b) { return a.start < b.start; });
}

WriteTracker WriteTracker::arm_ranges(RemoteSyscalls& rs, const std::vector<PageRun>& ranges) {
  const Support& sup = supported();
  pid_t pid = tgid_of(rs.task().tid());
  if (!sup.ok) throw Error(fmt::format("cannot track the writes of pid {}: {}", pid, sup.reason));
  ScopedFd mine = uffd::create_in(rs, pid, O_CLOEXEC | O_NONBLOCK | kUffdUserModeOnly,
                                  "seccomp or an LSM may forbid it in the job");
  enable_features(mine.get(), wanted_features(sup.features));
  WriteTracker t(pid, std::move(mine));
  t.arm_exactly(ranges);
  return t;
}

int WriteTracker::arm_range(uint64_t start, uint64_t end) {
  int err = 0;
  if (!arm_one(start, end, nullptr, &err)) return err;
  const PageRun r{start, end};
  armed_.insert(std::upper_bound(armed_.begin(), armed_.end(), r,
                                 [](const PageRun& a, const PageRun& b) { return a.start < b.start; }),
                r);
  return 0;
}

void WriteTracker::arm_exactly(const std::vector<PageRun>& ranges) {
  for (const auto& r : ranges) arm_range(r.start, r.end);  // one refused is left out
}

std::vector<PageRun> WriteTracker::unprotected(uint64_t start, uint64_t end) const {
  const std::string path = fmt::format("/proc/{}/pagemap", pid_);
  ScopedFd pm(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!pm) throw SysError("open " + path, errno);
  // One walk: the entries there are (present, or swapped: markers too),
  // written or not. Arming left an entry on every page (a marker where
  // none was), so a page with none now lost its entry since: a page
  // written and then zapped (MADV_DONTNEED, reclaim) gets no marker back.
  std::vector<PageRegion> regions;
  if (int e = pagemap_scan(pm.get(), start, end, 0, 0, kPageIsPresent | kPageIsSwapped,
                           kPageIsPresent | kPageIsSwapped | kPageIsWritten, regions))
    throw SysError(fmt::format("ioctl({}, PAGEMAP_SCAN, {:#x}-{:#x})", path, start, end), e);
  std::vector<PageRun> out;
  uint64_t at = start;
  for (const auto& r : regions) {
    if (r.start > at) append_run(out, at, r.start);  // no entry
    if (r.categories & kPageIsWritten) append_run(out, r.start, r.end);
    at = r.end;
  }
  if (at < end) append_run(out, at, end);
  return out;
}

void WriteTracker::protect_again(const std::vector<PageRun>& runs) {
  for (const auto& r : runs)
    if (int e = write_protect(uffd_.get(), r.start, r.end))
      throw SysError(fmt::format("UFFDIO_WRITEPROTECT of {:#x}-{:#x} in pid {}", r.start, r.end,
                                 pid_), e);
}

bool WriteTracker::disarm(uint64_t piece, std::chrono::microseconds pause, std::stop_token stop) {
  while (!armed_.empty()) {
    PageRun& r = armed_.front();
    while (r.start < r.end) {
      if (stop.stop_requested()) return false;
      uffdio_range range{r.start, std::min(piece, r.end - r.start)};
      ::ioctl(uffd_.get(), UFFDIO_UNREGISTER, &range);  // a range gone since: nothing to do
      r.start += range.len;
      // A page fault of the process waiting for the lock gets it now (a
      // writer taking it again at once would go first).
      if (pause.count()) std::this_thread::sleep_for(pause);
    }
    armed_.erase(armed_.begin());
  }
  return true;
}

void WriteTracker::disarm_range(uint64_t start, uint64_t end) {
  auto it = std::find_if(armed_.begin(), armed_.end(),
                         [&](const PageRun& r) { return r.start == start && r.end == end; });
  if (it == armed_.end()) return;
  uffdio_range range{start, end - start};
  ::ioctl(uffd_.get(), UFFDIO_UNREGISTER, &range);  // a range gone since: nothing to do
  armed_.erase(it);
}

uint64_t WriteTracker::written_pages(const std::vector<PageRun>& ranges) const {
  const std::string path = fmt::format("/proc/{}/pagemap", pid_);
  ScopedFd pm(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!pm) throw SysError("open " + path, errno);
  uint64_t n = 0;
  std::vector<PageRegion> regions;
  for (const auto& r : ranges) {
    regions.clear();
    // Populated and written (an unpopulated page shows as written).
    if (int e = pagemap_scan(pm.get(), r.start, r.end, kScanCheckWpAsync, kPageIsWritten,
                             kPageIsPresent | kPageIsSwapped, kPageIsWritten, regions))
      throw SysError(fmt::format("ioctl({}, PAGEMAP_SCAN, {:#x}-{:#x})", path, r.start, r.end), e);
    for (const auto& g : regions) n += (g.end - g.start) / image::kPageSize;
  }
  return n;
}

bool WriteTracker::arm_one(uint64_t start, uint64_t end, std::string* why, int* err) {
  if (int e = register_wp(uffd_.get(), start, end)) {
    if (err) *err = e;
    if (why)
      *why = fmt::format("UFFDIO_REGISTER: {}{}", std::strerror(e),
                         e == EBUSY ? " (the job's own userfaultfd watches it)" : "");
    return false;
  }
  if (int e = protect_in_pieces(start, end)) {
    uffdio_range r{start, end - start};
    ::ioctl(uffd_.get(), UFFDIO_UNREGISTER, &r);
    if (err) *err = e;
    if (why) *why = fmt::format("UFFDIO_WRITEPROTECT: {}", std::strerror(e));
    return false;
  }
  return true;
}

int WriteTracker::protect_in_pieces(uint64_t start, uint64_t end) {
  // A piece at a time: the process's page faults there wait for the call
  // that protects their page (~30 ms a GiB of pages here).
  for (uint64_t at = start; at < end; at += kProtectPiece) {
    if (at > start) std::this_thread::sleep_for(kProtectPause);
    if (int e = write_protect(uffd_.get(), at, std::min(end, at + kProtectPiece))) return e;
  }
  return 0;
}

bool WriteTracker::armed_as(const image::Mapping& m, bool* overlaps) const {
  // armed_ is ascending and disjoint: the first run ending after m.start.
  auto a = std::upper_bound(armed_.begin(), armed_.end(), m.start,
                            [](uint64_t s, const PageRun& r) { return s < r.end; });
  if (overlaps) *overlaps = a != armed_.end() && a->start < m.end;
  // Armed exactly: one armed range, or several adjacent ones the kernel
  // has merged into one mapping since (their protection stays per page).
  if (a == armed_.end() || a->start != m.start) return false;
  while (a->end < m.end && a + 1 != armed_.end() && (a + 1)->start == a->end) ++a;
  return a->end == m.end;
}

bool WriteTracker::armed_within(const image::Mapping& m) const {
  auto a = std::upper_bound(armed_.begin(), armed_.end(), m.start,
                            [](uint64_t s, const PageRun& r) { return s < r.end; });
  if (a == armed_.end() || a->start > m.start) return false;
  while (a->end < m.end && a + 1 != armed_.end() && (a + 1)->start == a->end) ++a;
  return a->end >= m.end;
}

std::vector<std::optional<WriteTracker::Since>> WriteTracker::since_armed(
    const std::vector<image::Mapping>& mappings) const {
  const std::string path = fmt::format("/proc/{}/pagemap", pid_);
  ScopedFd pm(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!pm) throw SysError("open " + path, errno);
  std::vector<std::optional<Since>> out;
  std::vector<PageRegion> regions;
  for (const auto& m : mappings) {
    out.emplace_back();
    if (!trackable(m) || !armed_within(m)) continue;
    regions.clear();
    // One walk: what is present or swapped, and written or not.
    // CHECK_WPASYNC: EPERM when the range is no longer ours.
    // (An unpopulated page without a marker shows as written: left out.)
    // (Asked only of file mappings: it costs a look at each page.)
    const bool file = m.kind == image::MappingKind::File;
    int e = pagemap_scan(pm.get(), m.start, m.end, kScanCheckWpAsync, 0,
                         kPageIsPresent | kPageIsSwapped,
                         kPageIsPresent | kPageIsSwapped | kPageIsWritten | kPageIsPfnZero |
                             (file ? kPageIsFile : 0),
                         regions);
    if (e == EPERM) continue;  // unmapped and mapped again since
    if (e) throw SysError(fmt::format("ioctl({}, PAGEMAP_SCAN, {:#x}-{:#x})", path, m.start, m.end), e);
    Since s;
    for (const auto& r : regions) {
      // The zero page: first read since, or read again after the job
      // released what was there (its protection carried over from the
      // released page's marker): changed without a write all the same.
      if (r.categories & (kPageIsWritten | kPageIsPfnZero)) append_run(s.written, r.start, r.end);
      // Markers: few, where only populated pages were protected.
      append_held(pm.get(), path, m, r, s.held);
    }
    out.back() = std::move(s);
  }
  return out;
}

std::vector<RangeReport> WriteTracker::scan_and_rearm(const std::vector<image::Mapping>& mappings) {
  std::string path = fmt::format("/proc/{}/pagemap", pid_);
  ScopedFd pm(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!pm) throw SysError("open " + path, errno);

  std::vector<PageRun> still_armed;
  std::vector<RangeReport> out;
  for (const auto& m : mappings) {
    if (!mapping_has_content(m)) continue;
    RangeReport rep;
    rep.start = m.start;
    rep.end = m.end;
    std::string why;
    bool can = trackable(m, &why);
    bool overlaps = false;
    const bool exact = armed_as(m, &overlaps);
    if (can && exact) {
      std::vector<PageRegion> regions;
      int e = pagemap_scan(pm.get(), m.start, m.end, kScanWpMatching | kScanCheckWpAsync,
                           kPageIsWritten, 0, kPageIsWritten, regions);
      if (e == EPERM) {
        // Same addresses, but not our registration any more: unmapped and
        // mapped again since.
        why = "replaced since it was armed";
      } else if (e) {
        throw SysError(fmt::format("ioctl({}, PAGEMAP_SCAN, {:#x}-{:#x})", path, m.start, m.end), e);
      } else {
        for (const auto& r : regions) append_run(rep.written, r.start, r.end);
        regions.clear();
        e = pagemap_scan(pm.get(), m.start, m.end, 0, 0, kPageIsPresent | kPageIsSwapped,
                         kPageIsPresent | kPageIsSwapped | kPageIsFile, regions);
        if (e)
          throw SysError(fmt::format("ioctl({}, PAGEMAP_SCAN, {:#x}-{:#x})", path, m.start, m.end), e);
        // Arming leaves a marker on every unpopulated page, so a swapped
        // region may be the whole mapping: its entries are read in chunks.
        for (const auto& r : regions) append_held(pm.get(), path, m, r, rep.resident);
        // A page zapped since (MADV_DONTNEED) shows as written, but holds
        // nothing now: absent, not written.
        rep.written = intersect(rep.written, rep.resident);
        rep.tracked = true;
        still_armed.push_back({m.start, m.end});
        out.push_back(std::move(rep));
        continue;
      }
    } else if (can) {
      why = overlaps ? "changed shape since it was armed (split, merged, grown or shrunk)"
                     : "mapped since tracking was armed";
    }
    rep.why = why;
    // Armed now, so the next scan tracks it: this checkpoint reads it in full.
    if (can) {
      std::string refused;
      if (arm_one(m.start, m.end, &refused)) still_armed.push_back({m.start, m.end});
      else rep.why += "; not armed: " + refused;
    }
    out.push_back(std::move(rep));
  }
  std::sort(still_armed.begin(), still_armed.end(),
            [](const PageRun& a, const PageRun& b) { return a.start < b.start; });
  armed_ = std::move(still_armed);
  return out;
}

}  // namespace snap
