// A snapshot of the job's anonymous shared memory (MAP_SHARED |
// MAP_ANONYMOUS), and of its shared memory files on tmpfs (POSIX shared
// memory in /dev/shm: MPI's shared-memory transports, Python's
// multiprocessing.shared_memory), that lets the job run again while snap
// reads it.
//
// A fork does not copy shared memory, so the copy-on-write snapshot
// (snapshot.h) shows it live: without this, it is read while the job is
// stopped (a 512 MiB region shared by four processes: ~0.3 s of freeze).
//
// How, with the tree stopped and each process's snapshot taken:
//   arm:   each process that maps such memory executes userfaultfd()
//          (uffd::create_in: the context is snap's, the job keeps no
//          descriptor); snap registers every such mapping in write-protect
//          mode and protects it, unpopulated pages included (pte markers).
//          Each page of an object is stored once, under the first mapping
//          in the tree's order that shows its offset; which pages hold data
//          is asked once the job runs (a page filled since then was stored
//          at its first write, as the zeros it held).
//   run:   a write by the job to a protected page stops the writing thread
//          on the fault. snap's serving thread copies the page (through the
//          snapshot child of the mapping that stores it, which maps the same
//          object), stores it, then lifts the page's protection, which lets
//          the thread go. Meanwhile the readers (dump_memory through sink())
//          read the rest from the snapshot children; a page the serving
//          thread stored already is dropped, and what a batch stored is
//          unprotected in every process. A page stays protected until it is
//          stored, so every page stored is the page as it was at the stop.
//   fork:  UFFD_FEATURE_EVENT_FORK: a child the job forks meanwhile inherits
//          the protection and snap serves its faults too (the fork waits
//          until snap has read the event). mremap: UFFD_FEATURE_EVENT_REMAP,
//          snap follows the move.
//   madvise: UFFD_FEATURE_EVENT_REMOVE: the job's MADV_REMOVE (or
//          MADV_DONTNEED; the event does not say which) goes on as soon as
//          snap has read the event, so a page freed then that snap had not
//          stored no longer holds what it held at the stop: the dump fails
//          (finish() throws), the job runs on.
// A write the kernel makes for the job (read(2) into the memory,
// process_vm_writev from another process of the job) faults the same way:
// the context is created without UFFD_USER_MODE_ONLY, which is what an
// unprivileged job may only create where vm.unprivileged_userfaultfd is 0;
// there the memory is read while stopped, as before.
//
// Lifetime: finish() or the destructor stop the serving thread and close
// every context; the kernel then drops the protection and lets any waiting
// thread go. If snap dies, its descriptors close and the same happens.
//
// Shared memory files on tmpfs are covered the same way, their mappings in
// the job protected; what would change one without a fault there, a
// write(2), truncate or fallocate of the file, is seen by an inotify watch
// on each, and fails the dump (finish() throws), the job running on. Not
// seen: a process outside the job writing one through a mapping of its own.
//
// Not covered (read while stopped): memfds and System V segments (the
// job's descriptors write them without faulting here or telling inotify),
// hugetlb, an object a process maps
// MADV_DONTFORK (its snapshot child lacks it), a tree where a process has
// no snapshot. Writes the CPU does not make through the job's page tables (DMA
// into registered memory) are not seen, as with any snapshot.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"
#include "tracer/memory.h"
#include "tracer/task.h"

namespace snap::parasite {

class SharedMemorySnapshot {
 public:
  struct Process {
    Task* leader = nullptr;   // stopped
    pid_t pid = 0;            // host pid
    pid_t snapshot_pid = 0;   // its copy-on-write snapshot child
    const std::vector<image::Mapping>* mappings = nullptr;  // sorted
  };
  // Where pages go: (owner pid, mapping start, address, data, pages), as
  // the dump's store; called from the serving thread too.
  using Store = std::function<void(pid_t owner, uint64_t mapping_start, uint64_t addr,
                                   const uint8_t* data, size_t npages)>;

  // Whether `m` is a kind of mapping this snapshot can cover.
  static bool coverable(const image::Mapping& m);

  // A shared memory file on tmpfs the job maps (image::Mapping::named_shm),
  // as the caller checked it: `path` as snap opens it.
  struct File {
    uint64_t dev = 0, inode = 0;
    std::string path;
  };

  // With every process of `procs` stopped and its snapshot taken: arms the
  // coverable mappings, and the mappings of `files`, and starts serving.
  // nullptr when there are none, or (with `why` set) when they cannot all
  // be armed: then nothing is left armed and the caller reads them while
  // stopped. The objects of `read_before` ((dev, inode): read before the
  // stop, job/shared_precopy.h) are left alone.
  static std::unique_ptr<SharedMemorySnapshot> take(
      const std::vector<Process>& procs, Store store, std::string* why,
      const std::vector<File>& files = {},
      const std::set<std::pair<uint64_t, uint64_t>>& read_before = {});
  ~SharedMemorySnapshot();
  SharedMemorySnapshot(const SharedMemorySnapshot&) = delete;
  SharedMemorySnapshot& operator=(const SharedMemorySnapshot&) = delete;

  // Whether mapping `m` of process `pid` is covered: read it from the
  // snapshot child once the job runs, its pages being pages(pid, m),
  // through sink(pid, ...).
  bool covers(pid_t pid, const image::Mapping& m) const;
  std::vector<uint64_t> pages(pid_t pid, const image::Mapping& m) const;
  // The sink to read process `pid`'s pages into: covered mappings' pages
  // are stored unless the serving thread did, then unprotected; others go
  // straight to `inner`. Thread-safe.
  PageSink sink(pid_t pid, PageSink inner);

  struct Stats {
    uint64_t bytes = 0;         // covered bytes of address space, all processes
    uint64_t pages = 0;         // pages stored
    uint64_t copied_at_write = 0;  // of them, stored by the serving thread
    size_t contexts = 0;        // userfaultfd contexts, forks of the job included
  };
  Stats stats() const {
    std::lock_guard lock(mu_);
    return stats_;
  }
  // Once every covered page was read: stops serving, closes the contexts.
  // Throws Error when a page could not be stored (what and why).
  Stats finish();

 private:
  struct Segment {  // a covered range of one process, as it is now
    uint64_t start = 0, end = 0;
    size_t object = 0;
    uint64_t pgoff = 0;  // offset of `start` in the object
  };
  struct View {  // one userfaultfd context: a process of the job
    ScopedFd uffd;
    std::vector<Segment> segs;
  };
  struct Owner {  // pages [first, last) of an object, stored under this mapping
    uint64_t first = 0, last = 0;
    pid_t pid = 0;
    int mem_fd = -1;  // of its snapshot child
    uint64_t mapping_start = 0, addr = 0;  // address of page `first`
  };
  struct Object {
    std::vector<Owner> owners;  // by `first`: each page offset of the mappings in one
    std::vector<bool> saved;    // by page offset: stored already
    const Owner* owner_of(uint64_t page) const;
  };
  struct Claimed {  // a covered mapping of a process
    size_t object = 0;
    uint64_t pgoff = 0;
    pid_t snapshot_pid = 0;
  };

  SharedMemorySnapshot() = default;
  void serve();
  void on_fault(size_t view, uint64_t addr);
  void on_remap(size_t view, uint64_t from, uint64_t to, uint64_t len);
  void on_remove(size_t view, uint64_t start, uint64_t end);
  // Lifts the protection of object pages [first, last) in every view.
  void unprotect(size_t object, uint64_t first, uint64_t last);
  void stop();
  void fail(std::string what);

  Store store_;
  std::map<std::pair<pid_t, uint64_t>, Claimed> claimed_;  // by (pid, mapping start)
  std::vector<Object> objects_;
  std::vector<std::unique_ptr<View>> views_;  // grown by the serving thread only
  std::map<pid_t, ScopedFd> mem_fds_;         // by snapshot child
  mutable std::mutex mu_;                     // objects_' saved, views_, stats_
  std::string error_;                         // the first failure
  Stats stats_;
  ScopedFd stop_fd_;  // eventfd: the serving thread returns
  ScopedFd watch_;    // inotify on the covered files: a write(2) to one
  std::map<int, std::string> watched_;  // by watch descriptor: the file's path
  std::thread server_;
  bool stopped_ = false;
};

}  // namespace snap::parasite
