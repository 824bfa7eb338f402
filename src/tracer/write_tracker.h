// Which pages a process wrote since the last checkpoint, without reading
// them: userfaultfd write-protection in async mode (UFFD_FEATURE_WP_ASYNC,
// Linux 6.7) and the PAGEMAP_SCAN ioctl on /proc/PID/pagemap (6.7). For
// kernels without soft-dirty bits (CONFIG_MEM_SOFT_DIRTY off).
//
// How it works:
//   arm:  the stopped process executes userfaultfd() (RemoteSyscalls); snap
//         takes the descriptor into its own table with pidfd_getfd and has
//         the process close its copy at once. Everything else (UFFDIO_API,
//         UFFDIO_REGISTER, UFFDIO_WRITEPROTECT) snap does on its copy: these
//         act on the mm the context was created for. The job is left with no
//         extra descriptor and no extra mapping.
//   run:  a write to a protected page faults once; in async mode the kernel
//         clears the page's protection itself and the write goes on (nothing
//         waits on snap; nothing is queued on the descriptor).
//   scan: PAGEMAP_SCAN with PM_SCAN_WP_MATCHING reports the pages whose
//         protection is gone (PAGE_IS_WRITTEN) and protects them again in the
//         same page-table walk, with the process stopped.
//
// Lifetime: the context lives as long as snap holds the descriptor. When
// the WriteTracker goes away, or snap dies, the kernel unregisters the
// ranges and the job runs on as before (stale protection bits are ignored
// once a range is unregistered).
//
// Fork: children of the job are not tracked (the kernel drops the
// registration in the child, the context has no UFFD_FEATURE_EVENT_FORK).
// The parent's tracking survives the fork unchanged: pages it shares
// copy-on-write with the child stay protected, and its first write to one
// both copies it and reports it written. snap's own copy-on-write snapshot
// (parasite/snapshot.h) is such a fork.
//
// What is tracked: private, writable mappings that hold state (anonymous,
// [heap], [stack], private file mappings: copied-on-write pages), up to
// kMaxTrackedBytes each. Not tracked (reported untracked, read in full every
// time): shared memory (written through other processes' page tables),
// read-only and PROT_NONE mappings, mappings registered with another
// userfaultfd (the job's own), and anything mapped, moved (mremap), split
// or merged (mprotect, munmap of a part) since it was armed; those are armed
// at the next scan_and_rearm. arm_ranges() arms given ranges whatever they
// map, a data file mapped shared say (job/file_precopy.h), and
// unprotected() reads what changed there. A transparent huge page mapped by one
// page-table entry is protected as a whole: one written byte may report all
// of its 2 MiB written (false positives only; re-protecting part of one
// splits it). Arming inhibits khugepaged collapse of protected pages. Writes the CPU does not make through the job's page
// tables are NOT seen: DMA into pinned pages (RDMA-registered memory,
// io_uring fixed buffers, O_DIRECT reads in flight).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"

namespace snap {

class RemoteSyscalls;

// Pages [start, end) of a process, page aligned.
struct PageRun {
  uint64_t start = 0, end = 0;
  uint64_t pages() const { return (end - start) / image::kPageSize; }
  bool operator==(const PageRun&) const = default;
};
// Whether ascending, disjoint `runs` cover page `addr`.
bool runs_contain(const std::vector<PageRun>& runs, uint64_t addr);
uint64_t runs_pages(const std::vector<PageRun>& runs);

// What one scan says about one mapping of the process.
struct RangeReport {
  uint64_t start = 0, end = 0;
  // false: read this mapping in full (as pages_to_dump selects); `why` says
  // why (new since arming, reshaped, shared, ...). written/resident empty.
  bool tracked = false;
  std::string why;
  // Tracked mappings:
  //   written:  pages written since arming or the previous scan (read them);
  //   resident: pages that hold state now: present or swapped (for a private
  //             file mapping, only pages copied on write, or swapped) —
  //             the pages pages_to_dump would select.
  // The caller's rule, per page: written → read it; resident and not
  // written → unchanged since the previous checkpoint (reference it; if the
  // previous one had no data there, the page is zero); not resident →
  // absent (zero, or the file's page). A written page is always resident.
  std::vector<PageRun> written;
  std::vector<PageRun> resident;
};

class WriteTracker {
 public:
  // Largest mapping armed. Arming write-protects unpopulated pages too
  // (pte markers), which allocates page tables: 2 MiB per GiB of range.
  static constexpr uint64_t kMaxTrackedBytes = 64ull << 30;

  struct Support {
    bool ok = false;
    std::string reason;     // when !ok: what is missing; else what is used
    uint64_t features = 0;  // UFFD features the kernel offers
  };
  // Whether this kernel and user can track writes: tried for real on a page
  // of snap's own (userfaultfd with UFFD_USER_MODE_ONLY, async
  // write-protect, PAGEMAP_SCAN re-protecting a written page, pidfd_getfd).
  // Computed once. A job can still refuse (seccomp, no free descriptor):
  // arm() throws then.
  static const Support& supported();

  // Arms tracking in the process of `rs`'s thread, which is stopped, for
  // those of `mappings` (its current ones: proc::read_mappings) that can be
  // tracked. Throws SysError (with pid, call, errno) when the process cannot
  // create a userfaultfd or the kernel lacks the features; the process is
  // then left as it was.
  static WriteTracker arm(RemoteSyscalls& rs, const std::vector<image::Mapping>& mappings);
  // The same in two steps: open() needs the process's one thread stopped
  // (it makes userfaultfd() there and takes the descriptor), arm_mappings()
  // works from snap alone, also while the process runs again: a page it
  // writes before its range is protected is simply not reported, so
  // whatever reads the pages must read them after arm_mappings().
  // `populated`: protect only the pages present or swapped out now, not
  // the unpopulated ones (whose pte markers cost page-table pages, and time
  // in every later walk and in the end of the tracking: ~20 ms a GiB of
  // range here, the job's page faults waiting meanwhile). A page the job
  // populates later is then reported written by since_armed() and
  // written_pages(), whether it wrote or only read it (a false positive);
  // scan_and_rearm() needs the markers.
  static WriteTracker open(RemoteSyscalls& rs);
  void arm_mappings(const std::vector<image::Mapping>& mappings, bool populated = false);

  WriteTracker(WriteTracker&&) noexcept = default;
  WriteTracker& operator=(WriteTracker&&) noexcept = default;
  ~WriteTracker() = default;  // closing the descriptor ends the tracking

  // With the process stopped: one report per mapping of `mappings` (its
  // current ones, ascending) that holds state (mapping_has_content), in the
  // same order. Tracked mappings are re-protected in the same walk, so the
  // next scan reports writes made after this one. Mappings reported
  // untracked that can be tracked are armed now (from snap, no system call
  // in the job), so the next scan tracks them. Throws SysError when
  // /proc/PID/pagemap cannot be opened or scanned.
  std::vector<RangeReport> scan_and_rearm(const std::vector<image::Mapping>& mappings);

  pid_t pid() const { return pid_; }
  // Ranges armed now, ascending.
  const std::vector<PageRun>& armed() const { return armed_; }

  // Arms exactly `ranges` (whole mappings, ascending) of the process of
  // `rs`'s stopped thread, whatever memory they map: shared file mappings
  // too, whose pages other processes and write(2) may also change
  // unseen (the caller rules those out). Only the one thread need be
  // stopped, for the userfaultfd() call. A range the kernel refuses is
  // left out of armed(). Throws as arm().
  static WriteTracker arm_ranges(RemoteSyscalls& rs, const std::vector<PageRun>& ranges);
  // The same from snap alone, on a tracker open() made, while the process
  // runs again: its page faults wait for one piece being protected at most
  // (where protecting 512 MiB of shared memory while it is stopped stalls
  // it 20-25 ms here).
  void arm_exactly(const std::vector<PageRun>& ranges);
  // One range so: 0, or the errno the kernel refused it with (EPERM: a
  // mapping that can never write, without VM_MAYWRITE, as a read-only
  // MAP_SHARED mapping of a file opened read-only).
  int arm_range(uint64_t start, uint64_t end);
  // With the process stopped: the pages of armed range [start, end) not
  // write-protected any more, from one PAGEMAP_SCAN walk: those written
  // since arming, and those whose page-table entry has gone since (a
  // written page zapped or written back and reclaimed leaves no trace of
  // its write): to be taken as written. Throws SysError when pagemap
  // cannot be scanned.
  std::vector<PageRun> unprotected(uint64_t start, uint64_t end) const;
  // While the process runs or is stopped: protects `runs` (ascending, within
  // armed ranges) again, so that unprotected() reports only what is
  // written after this (a page with no entry gets its marker back). Throws
  // SysError.
  void protect_again(const std::vector<PageRun>& runs);
  // While the process runs or is stopped, without re-protecting: how many
  // pages of armed `ranges` (ascending) were written since arming. Throws
  // SysError when pagemap cannot be opened or scanned.
  uint64_t written_pages(const std::vector<PageRun>& ranges) const;

  // With the process stopped, without re-protecting anything: for each of
  // `mappings` (ascending) that lies within armed ranges (as armed, or a
  // part of one split off since: a split keeps the registration and the
  // pages' protection), the pages written since arming (present or
  // swapped out since; and the zero page where it is mapped, which a page
  // released since and read again may show unwritten) and the pages that
  // hold state now (present or swapped out, not a marker; of a private
  // file mapping, its own: copied on write); nullopt for any other (not
  // armed, grown since, or unmapped and mapped again: the kernel says that
  // range is not ours). One page-table walk a mapping, and pagemap's
  // entries where it shows pages swapped. Throws SysError when pagemap
  // cannot be opened or scanned.
  struct Since {
    std::vector<PageRun> written, held;
  };
  std::vector<std::optional<Since>> since_armed(const std::vector<image::Mapping>& mappings) const;

  // Ends the tracking of every armed range a `piece` of bytes at a time,
  // waiting `pause` between pieces: each call write-locks the process's
  // mappings while it takes the protection off the pages of its piece (the
  // process's page faults wait, and get in during the pause), where closing
  // the descriptor would do all at once (~15 ms for 100 MiB of pages here).
  // While the process runs. With `stop` asked, returns false after the
  // piece under way, armed() then being what is left; true once all ended.
  // Allocates nothing (a forked child of a threaded process may call it).
  bool disarm(uint64_t piece, std::chrono::microseconds pause, std::stop_token stop = {});
  // Ends the tracking of armed range [start, end) alone (as armed by
  // arm_exactly), at once: the others stay armed.
  void disarm_range(uint64_t start, uint64_t end);
  // The userfaultfd (for a child that goes on with disarm()).
  int fd() const { return uffd_.get(); }

  // Whether `m` is a kind of mapping this tracker arms.
  static bool trackable(const image::Mapping& m, std::string* why = nullptr);

 private:
  WriteTracker(pid_t pid, ScopedFd uffd) : pid_(pid), uffd_(std::move(uffd)) {}
  // UFFDIO_REGISTER (WP) + UFFDIO_WRITEPROTECT on [start, end); false (with
  // `why`) when the kernel refuses the range.
  bool arm_one(uint64_t start, uint64_t end, std::string* why, int* err = nullptr);
  // UFFDIO_WRITEPROTECT on registered [start, end), a piece at a time with
  // a pause between pieces; 0, or the errno of the piece refused.
  int protect_in_pieces(uint64_t start, uint64_t end);
  // Whether `m` is armed exactly: one armed range, or adjacent ones the
  // kernel merged since; `overlaps`: whether any armed range overlaps it.
  bool armed_as(const image::Mapping& m, bool* overlaps = nullptr) const;
  // Whether `m` lies within armed ranges (adjacent ones joined).
  bool armed_within(const image::Mapping& m) const;

  pid_t pid_ = 0;
  ScopedFd uffd_;
  std::vector<PageRun> armed_;
};

}  // namespace snap
