#include "parasite/shared_snapshot.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <set>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "base/parallel.h"
#include "parasite/parasite.h"
#include "parasite/thread_guard.h"
#include "tracer/remote.h"
#include "tracer/userfaultfd.h"

namespace snap::parasite {

namespace {

constexpr uint64_t kPage = image::kPageSize;
// Protecting a populated range walks its page tables (~12 ms for 512 MiB
// here): large ranges are cut so two threads share the work.
constexpr uint64_t kProtectPiece = 64ull << 20;

// Why snap (and so a job of its user) may not write-protect shared memory
// here, or empty: tried once, on a page of snap's own.
const std::string& refused() {
  static const std::string why = uffd::shared_write_protect_refused();
  return why;
}

// A userfaultfd context of process `pid` (its leader stopped and parked by
// `guarded`), taken by snap, with no moment where snap's death would leave
// the job a descriptor (it would keep its later dumps from working: snap
// cannot save one). The leader runs a few instructions of its own, from a
// page mapped for them: userfaultfd(flags), close() of what it returned,
// then `ret` onto its guard's frame, whose rt_sigreturn takes it back to
// its own context. snap takes the descriptor at that userfaultfd's exit
// stop, between the two calls. Dying anywhere after the start, snap leaves
// a thread that closes it and goes back by itself; before, nothing exists.
// Where the guard cannot heal, a plain remote call as before.
ScopedFd create_context_in(GuardedSyscalls& guarded, pid_t pid, int flags, const std::string& hint) {
  if (!guarded.healing()) return uffd::create_in(guarded.rs(), pid, flags, hint);
  const pid_t tid = guarded.rs().task().tid();
  ScopedFd pidfd(uffd::pidfd_open(pid));
  if (!pidfd) throw SysError(fmt::format("pidfd_open({})", pid), errno);
  const uint32_t f = static_cast<uint32_t>(flags);
  const uint8_t code[] = {
      0xbf, uint8_t(f), uint8_t(f >> 8), uint8_t(f >> 16), uint8_t(f >> 24),  // mov $flags, %edi
      0xb8, uint8_t(SYS_userfaultfd), uint8_t(SYS_userfaultfd >> 8), 0, 0,  // mov $SYS_userfaultfd, %eax
      0x0f, 0x05,                                                          // syscall
      0x89, 0xc7,                                                          // mov %eax, %edi
      0xb8, uint8_t(SYS_close), 0, 0, 0,                                   // mov $SYS_close, %eax
      0x0f, 0x05,                                                          // syscall
      0xc3};                                                               // ret: to the frame's gadget
  ScopedFd mine;
  long result = -ENOSYS;
  int getfd_err = 0;
  bool entered = false;
  guarded.run_sequence("userfaultfd-sequence", code, {}, [&](const Registers& r) {
    if (r.original_syscallno() != SYS_userfaultfd) return;
    if (!entered) {  // its entry stop; the exit is next
      entered = true;
      return;
    }
    result = r.syscall_result();
    if (result < 0) return;
    phase(tid, "shared-uffd-created");
    mine.reset(uffd::pidfd_getfd(pidfd.get(), static_cast<int>(result)));
    getfd_err = errno;
  });
  if (result < 0)
    throw SysError(fmt::format("userfaultfd() in pid {}", pid), static_cast<int>(-result), hint);
  if (!mine) throw SysError(fmt::format("pidfd_getfd(pid {}, fd {})", pid, result), getfd_err);
  return mine;
}

}  // namespace

bool SharedMemorySnapshot::coverable(const image::Mapping& m) {
  return m.kind == image::MappingKind::SharedAnon && m.inode != 0 &&
         !image::has_vmflag(m.vmflags, "ht") && mapping_has_content(m);
}

const SharedMemorySnapshot::Owner* SharedMemorySnapshot::Object::owner_of(uint64_t page) const {
  auto it = std::upper_bound(owners.begin(), owners.end(), page,
                             [](uint64_t p, const Owner& o) { return p < o.first; });
  if (it == owners.begin()) return nullptr;
  --it;
  return page < it->last ? &*it : nullptr;
}

std::unique_ptr<SharedMemorySnapshot> SharedMemorySnapshot::take(const std::vector<Process>& procs,
                                                                 Store store, std::string* why,
                                                                 const std::vector<File>& files,
                                                                 const std::set<std::pair<uint64_t, uint64_t>>& read_before) {
  std::unique_ptr<SharedMemorySnapshot> ss(new SharedMemorySnapshot());
  ss->store_ = std::move(store);
  // An object some process maps MADV_DONTFORK is missing from that
  // process's snapshot child: it is read while the job is stopped.
  std::set<std::pair<uint64_t, uint64_t>> not_forked;
  for (const auto& p : procs)
    for (const auto& m : *p.mappings)
      if ((coverable(m) || m.named_shm) && image::has_vmflag(m.vmflags, "dc") &&
          not_forked.insert({m.dev, m.inode}).second)
        vlog("pid {}: shared memory {:#x}-{:#x} is MADV_DONTFORK: it is read while the job is "
             "stopped", p.pid, m.start, m.end);
  std::map<std::pair<uint64_t, uint64_t>, size_t> object_of;  // (dev, inode)
  std::map<std::pair<uint64_t, uint64_t>, const File*> file_of;  // (dev, inode)
  for (const auto& f : files) file_of.emplace(std::pair{f.dev, f.inode}, &f);
  auto covered = [&](const image::Mapping& m) {
    const bool kind = coverable(m) || (m.named_shm && file_of.count({m.dev, m.inode}) &&
                                       !image::has_vmflag(m.vmflags, "ht") && mapping_has_content(m));
    return kind && !not_forked.count({m.dev, m.inode}) && !read_before.count({m.dev, m.inode});
  };
  for (const auto& p : procs)
    for (const auto& m : *p.mappings)
      if (covered(m)) object_of.try_emplace({m.dev, m.inode}, object_of.size());
  if (object_of.empty()) return nullptr;
  try {
    if (!refused().empty()) {
      *why = refused();
      return nullptr;
    }
    // The files first: from here a write(2) to one is seen.
    for (const auto& [key, obj] : object_of) {
      auto f = file_of.find(key);
      if (f == file_of.end()) continue;
      if (!ss->watch_) {
        ss->watch_.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
        if (!ss->watch_) throw SysError("inotify_init1", errno);
      }
      const int wd = ::inotify_add_watch(ss->watch_.get(), f->second->path.c_str(), IN_MODIFY);
      if (wd < 0) throw SysError(fmt::format("inotify_add_watch({})", f->second->path), errno);
      ss->watched_[wd] = f->second->path;
    }
    ss->objects_.resize(object_of.size());
    std::vector<std::pair<int, Segment>> to_protect;  // (uffd, range)
    for (const auto& p : procs) {
      std::vector<const image::Mapping*> mine;
      for (const auto& m : *p.mappings)
        if (covered(m)) mine.push_back(&m);
      if (mine.empty()) continue;
      auto view = std::make_unique<View>();
      {
        // Guarded: if snap dies during these calls, the leader goes back to
        // its own context by itself.
        GuardedSyscalls guarded(*p.leader);
        view->uffd = create_context_in(guarded, p.pid, O_CLOEXEC | O_NONBLOCK,
                                     "a job may be refused a userfaultfd that serves the kernel's "
                                     "own faults (vm.unprivileged_userfaultfd = 0, seccomp)");
      }
      uffd::enable_features(view->uffd.get(), uffd::kSharedWpFeatures);
      ScopedFd& mem = ss->mem_fds_[p.snapshot_pid];
      if (!mem) {
        std::string path = fmt::format("/proc/{}/mem", p.snapshot_pid);
        mem.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!mem) throw SysError("open " + path, errno);
      }
      for (const auto* m : mine) {
        size_t obj = object_of.at({m->dev, m->inode});
        if (int e = uffd::register_wp(view->uffd.get(), m->start, m->end))
          throw SysError(fmt::format("UFFDIO_REGISTER of {:#x}-{:#x} in pid {}", m->start, m->end,
                                     p.pid), e, e == EBUSY ? "the job's own userfaultfd watches it" : "");
        view->segs.push_back({m->start, m->end, obj, m->pgoff});
        for (uint64_t s = m->start; s < m->end; s += kProtectPiece)
          to_protect.push_back({view->uffd.get(), {s, std::min(m->end, s + kProtectPiece), obj, 0}});
        ss->stats_.bytes += m->end - m->start;
        // The pages of the object this mapping stores: those no earlier
        // mapping shows (which of them hold data is asked once the job runs).
        const uint64_t first = m->pgoff / kPage, last = first + (m->end - m->start) / kPage;
        Object& o = ss->objects_[obj];
        if (o.saved.size() < last) o.saved.resize(last);
        // The gaps between the runs earlier mappings own (sorted, disjoint).
        std::vector<Owner> mine_runs;
        uint64_t at = first;
        auto own = [&](uint64_t a, uint64_t b) {
          if (a < b) mine_runs.push_back({a, b, p.pid, mem.get(), m->start, m->start + (a - first) * kPage});
        };
        for (const auto& ow : o.owners) {
          if (ow.last <= at || ow.first >= last) continue;
          own(at, std::min(ow.first, last));
          at = std::max(at, ow.last);
        }
        own(at, last);
        o.owners.insert(o.owners.end(), mine_runs.begin(), mine_runs.end());
        std::sort(o.owners.begin(), o.owners.end(),
                  [](const Owner& a, const Owner& b) { return a.first < b.first; });
        ss->claimed_[{p.pid, m->start}] = Claimed{obj, m->pgoff, p.snapshot_pid};
      }
      ss->views_.push_back(std::move(view));
    }
    parallel_for(to_protect.size(), 2, [&](size_t i) {
      const auto& [fd, r] = to_protect[i];
      if (int e = uffd::write_protect(fd, r.start, r.end))
        throw SysError(fmt::format("UFFDIO_WRITEPROTECT of {:#x}-{:#x}", r.start, r.end), e);
    });
    ss->stats_.contexts = ss->views_.size();
    ss->stop_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!ss->stop_fd_) throw SysError("eventfd", errno);
    ss->server_ = std::thread([s = ss.get()] { s->serve(); });
  } catch (const Error& e) {
    *why = e.hint().empty() ? e.what() : fmt::format("{} ({})", e.what(), e.hint());
    return nullptr;  // closing the contexts unregisters everything
  }
  return ss;
}

SharedMemorySnapshot::~SharedMemorySnapshot() { stop(); }

void SharedMemorySnapshot::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (server_.joinable()) {
    uint64_t one = 1;
    if (::write(stop_fd_.get(), &one, sizeof one) != sizeof one) std::terminate();
    server_.join();
  }
  std::lock_guard lock(mu_);
  views_.clear();  // the kernel drops the protection, waiting threads go on
}

bool SharedMemorySnapshot::covers(pid_t pid, const image::Mapping& m) const {
  return claimed_.count({pid, m.start}) > 0;
}

std::vector<uint64_t> SharedMemorySnapshot::pages(pid_t pid, const image::Mapping& m) const {
  auto it = claimed_.find({pid, m.start});
  if (it == claimed_.end()) return {};
  const Claimed& c = it->second;
  // The object's pages that hold data, asked through the snapshot child
  // (the same object at the same addresses, even if the job unmapped it
  // since); those this mapping stores. A page the job filled since the stop
  // was stored at its first write (as the zeros it held), so it is dropped
  // again by sink().
  const Object& o = objects_[c.object];
  if (std::none_of(o.owners.begin(), o.owners.end(), [&](const Owner& ow) {
        return ow.pid == pid && ow.mapping_start == m.start;
      }))
    return {};  // every page of it is another mapping's (the object's data is read once)
  std::vector<uint64_t> out = pages_to_dump(c.snapshot_pid, m);
  std::erase_if(out, [&](uint64_t a) {
    const Owner* ow = o.owner_of((c.pgoff + a - m.start) / kPage);
    return !ow || ow->pid != pid || ow->mapping_start != m.start;
  });
  return out;
}

void SharedMemorySnapshot::fail(std::string what) {
  std::lock_guard lock(mu_);
  if (error_.empty()) error_ = std::move(what);
}

PageSink SharedMemorySnapshot::sink(pid_t pid, PageSink inner) {
  return [this, pid, inner = std::move(inner)](pid_t p, uint64_t mapping_start, uint64_t addr,
                                               const uint8_t* data, size_t npages) {
    auto it = claimed_.find({pid, mapping_start});
    if (it == claimed_.end()) return inner(p, mapping_start, addr, data, npages);
    const Claimed& c = it->second;
    const uint64_t first = (c.pgoff + addr - mapping_start) / kPage;
    std::vector<char> keep(npages);
    {
      std::lock_guard lock(mu_);
      auto& saved = objects_[c.object].saved;
      for (size_t i = 0; i < npages; i++)
        if (first + i < saved.size() && !saved[first + i]) {
          saved[first + i] = true;
          keep[i] = 1;
          stats_.pages++;
        }
    }
    // What was read before the page was marked stored is the page as it was
    // at the stop: the job's first write to it waits until it is stored.
    for (size_t i = 0; i < npages;) {
      size_t j = i;
      while (j < npages && keep[j] == keep[i]) j++;
      if (keep[i]) inner(p, mapping_start, addr + i * kPage, data + i * kPage, j - i);
      i = j;
    }
    unprotect(c.object, first, first + npages);
  };
}

void SharedMemorySnapshot::unprotect(size_t object, uint64_t first, uint64_t last) {
  std::lock_guard lock(mu_);
  for (const auto& v : views_)
    for (const auto& s : v->segs) {
      if (s.object != object) continue;
      uint64_t lo = std::max(s.pgoff, first * kPage), hi = std::min(s.pgoff + (s.end - s.start), last * kPage);
      if (lo >= hi) continue;
      // A range the job unmapped meanwhile is refused: nothing to lift there.
      uffd::write_protect(v->uffd.get(), s.start + (lo - s.pgoff), s.start + (hi - s.pgoff), false);
    }
}

void SharedMemorySnapshot::serve() {
  std::array<uffd_msg, 32> msgs;
  std::vector<bool> gone;  // by view: a context that reports an error is not polled again
  for (;;) {
    gone.resize(views_.size());
    std::vector<pollfd> pfds{{stop_fd_.get(), POLLIN, 0}};
    for (size_t v = 0; v < views_.size(); v++)
      pfds.push_back({gone[v] ? -1 : views_[v]->uffd.get(), POLLIN, 0});
    if (::poll(pfds.data(), pfds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      fail(fmt::format("poll on the shared memory's userfaultfds: {}", std::strerror(errno)));
      return;  // stop() closes the contexts: the job is let go
    }
    if (pfds[0].revents) return;
    for (size_t v = 0; v + 1 < pfds.size(); v++) {
      if (!(pfds[v + 1].revents & POLLIN)) {
        if (pfds[v + 1].revents & (POLLERR | POLLHUP | POLLNVAL)) gone[v] = true;
        continue;
      }
      for (;;) {
        ssize_t n = ::read(views_[v]->uffd.get(), msgs.data(), sizeof msgs);
        if (n <= 0) break;
        for (size_t k = 0; k < static_cast<size_t>(n) / sizeof(uffd_msg); k++) {
          const uffd_msg& msg = msgs[k];
          if (msg.event == UFFD_EVENT_PAGEFAULT) {
            on_fault(v, msg.arg.pagefault.address & ~(kPage - 1));
          } else if (msg.event == UFFD_EVENT_FORK) {
            // The child's context, in snap's fd table: its faults are
            // served the same way, its layout is the parent's.
            auto child = std::make_unique<View>();
            child->uffd.reset(static_cast<int>(msg.arg.fork.ufd));
            std::lock_guard lock(mu_);
            child->segs = views_[v]->segs;
            views_.push_back(std::move(child));
            stats_.contexts++;
          } else if (msg.event == UFFD_EVENT_REMAP) {
            on_remap(v, msg.arg.remap.from, msg.arg.remap.to, msg.arg.remap.len);
          } else if (msg.event == UFFD_EVENT_REMOVE) {
            on_remove(v, msg.arg.remove.start, msg.arg.remove.end);
          }
        }
      }
    }
  }
}

void SharedMemorySnapshot::on_fault(size_t view, uint64_t addr) {
  std::array<uint8_t, kPage> page;
  int fd = views_[view]->uffd.get();
  {
    std::unique_lock lock(mu_);
    const auto& segs = views_[view]->segs;
    auto seg = std::find_if(segs.begin(), segs.end(),
                            [&](const Segment& s) { return addr >= s.start && addr < s.end; });
    if (seg != segs.end()) {
      Object& o = objects_[seg->object];
      uint64_t n = (seg->pgoff + addr - seg->start) / kPage;
      const Owner* ow = o.owner_of(n);
      if (ow && n < o.saved.size() && !o.saved[n]) {
        // A hole of the object reads as zeros here (and gets a page, which
        // the job's write was about to give it anyway).
        uint64_t at = ow->addr + (n - ow->first) * kPage;
        if (::pread(ow->mem_fd, page.data(), kPage, static_cast<off_t>(at)) ==
            static_cast<ssize_t>(kPage)) {
          o.saved[n] = true;
          stats_.pages++;
          stats_.copied_at_write++;
          lock.unlock();
          try {
            store_(ow->pid, ow->mapping_start, at, page.data(), 1);
          } catch (const std::exception& e) {
            fail(fmt::format("storing a page of shared memory the job wrote: {}", e.what()));
          }
        } else if (error_.empty()) {
          error_ = fmt::format("reading page {:#x} of shared memory from the snapshot: {}", at,
                               std::strerror(errno));
        }
      }
    }
  }
  // The write goes on (even where the page could not be stored: the dump
  // fails then, the job must not).
  if (uffd::write_protect(fd, addr, addr + kPage, false) != 0) {
    uffdio_range r{addr, kPage};
    ::ioctl(fd, UFFDIO_WAKE, &r);
  }
}

void SharedMemorySnapshot::on_remap(size_t view, uint64_t from, uint64_t to, uint64_t len) {
  std::lock_guard lock(mu_);
  std::vector<Segment> out;
  for (const auto& s : views_[view]->segs) {
    uint64_t lo = std::max(s.start, from), hi = std::min(s.end, from + len);
    if (lo >= hi) {
      out.push_back(s);
      continue;
    }
    if (s.start < lo) out.push_back({s.start, lo, s.object, s.pgoff});
    out.push_back({lo - from + to, hi - from + to, s.object, s.pgoff + (lo - s.start)});
    if (hi < s.end) out.push_back({hi, s.end, s.object, s.pgoff + (hi - s.start)});
  }
  views_[view]->segs = std::move(out);
}

void SharedMemorySnapshot::on_remove(size_t view, uint64_t start, uint64_t end) {
  // The job's madvise goes on as soon as this event is read: with
  // MADV_REMOVE the object's pages are freed, and what they held at the
  // stop is gone, so a page not stored yet cannot be stored as it was.
  // (With MADV_DONTNEED only the job's page tables lose them, but the event
  // does not tell which.) The dump fails rather than store other contents.
  std::lock_guard lock(mu_);
  for (const auto& s : views_[view]->segs) {
    const uint64_t lo = std::max(s.start, start), hi = std::min(s.end, end);
    if (lo >= hi) continue;
    const Object& o = objects_[s.object];
    for (uint64_t a = lo; a < hi; a += kPage) {
      const uint64_t n = (s.pgoff + a - s.start) / kPage;
      if (n >= o.saved.size() || o.saved[n] || !o.owner_of(n)) continue;
      if (error_.empty())
        error_ = fmt::format(
            "the job released shared memory at {:#x}-{:#x} (madvise MADV_REMOVE or "
            "MADV_DONTNEED) before snap had read all of it; what it held at the stop may be "
            "gone, so it cannot be stored faithfully",
            start, end);
      return;
    }
  }
}

SharedMemorySnapshot::Stats SharedMemorySnapshot::finish() {
  stop();
  std::lock_guard lock(mu_);
  if (watch_ && error_.empty()) {
    // A file written other than through the protected mappings since the
    // stop: what was stored of it may mix two instants.
    alignas(inotify_event) char buf[4096];
    const ssize_t n = ::read(watch_.get(), buf, sizeof buf);
    if (n > 0) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf);
      auto it = watched_.find(ev->wd);
      error_ = fmt::format("{} was written (write, truncate or fallocate) while snap read it, "
                           "after the job was let go: what was stored of it may not be as it "
                           "was at the stop",
                           it == watched_.end() ? "a shared memory file" : it->second);
    }
  }
  if (!error_.empty())
    throw Error("shared memory: " + error_,
                "the job ran on unharmed; dump it again (or with --kill: the job stays stopped "
                "while its memory is read)");
  return stats_;
}

}  // namespace snap::parasite
