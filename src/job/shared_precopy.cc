#include "job/shared_precopy.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>

#include <fmt/core.h>

#include "base/error.h"
#include "base/file_extents.h"
#include "base/log.h"
#include "base/parallel.h"
#include "job/dump.h"
#include "job/memory_precopy.h"
#include "parasite/thread_guard.h"
#include "tracer/file_pages.h"
#include "tracer/pid_view.h"
#include "tracer/proc.h"
#include "tracer/remote.h"
#include "tracer/task.h"

namespace snap::job {

namespace {

constexpr uint64_t kPage = image::kPageSize;

// A shared mapping of a shared memory object: anonymous memory shared
// across fork (the kernel's "/dev/zero"), a System V segment, or a file
// (on tmpfs: checked once it is open). Memfds are saved as the files they
// are (ghost files), huge pages are not tracked.
bool candidate(const image::Mapping& m) {
  if (!m.shared || m.inode == 0) return false;
  if (m.kind == image::MappingKind::SharedAnon)
    return m.path.starts_with("/dev/zero") || m.path.starts_with("/SYSV");
  return m.kind == image::MappingKind::File && m.path.starts_with('/') &&
         !m.path.ends_with(" (deleted)");
}

// The object `m` of `pid` maps, opened for reading (the anonymous ones
// through /proc/PID/map_files: CAP_SYS_ADMIN); `tmpfs`: whether it is on
// tmpfs.
ScopedFd open_object(pid_t pid, const image::Mapping& m, std::string* why, bool* tmpfs) {
  ScopedFd fd;
  if (m.kind == image::MappingKind::SharedAnon) {
    const std::string path = fmt::format("/proc/{}/map_files/{:x}-{:x}", pid, m.start, m.end);
    fd.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) *why = fmt::format("open {}: {}", path, std::strerror(errno));
  } else {
    fd = open_mapped_file(pid, m);
    if (!fd) *why = "its file cannot be opened";
  }
  struct statfs fs {};
  if (fd && ::fstatfs(fd.get(), &fs) != 0) {
    *why = fmt::format("fstatfs: {}", std::strerror(errno));
    fd.reset();
  }
  *tmpfs = fd && fs.f_type == TMPFS_MAGIC;
  return fd;
}

std::string name_of(const image::Mapping& m) {
  return m.kind == image::MappingKind::SharedAnon ? fmt::format("shared memory {}", m.path) : m.path;
}

uint64_t bytes_of(const std::vector<ByteRange>& ranges) {
  uint64_t n = 0;
  for (const auto& [a, b] : ranges) n += b - a;
  return n;
}

// Reads the pages at `runs` (ascending addresses; the file's byte at
// address a being a + `to_offset`, modulo 2^64) from the file open on `fd`
// into `fn`, a piece at a time, holes as zeros. Throws SysError.
void read_again(int fd, const std::vector<ByteRange>& runs, uint64_t to_offset,
                const std::function<void(uint64_t addr, const uint8_t* data, size_t npages)>& fn) {
  constexpr uint64_t kPiece = uint64_t{256} << 10;
  std::vector<uint8_t> buf(kPiece);
  for (const auto& [a, b] : runs)
    for (uint64_t at = a; at < b; at += kPiece) {
      const size_t want = static_cast<size_t>(std::min(kPiece, b - at));
      size_t got = 0;
      while (got < want) {
        const ssize_t n = ::pread(fd, buf.data() + got, want - got,
                                  static_cast<off_t>(at + to_offset + got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw SysError(fmt::format("pread at offset {}", at + to_offset + got), errno);
        if (n == 0) break;  // shorter by now: the rest is zeros
        got += static_cast<size_t>(n);
      }
      std::memset(buf.data() + got, 0, want - got);
      fn(at, buf.data(), want / kPage);
    }
}

}  // namespace

SharedPrecopy SharedPrecopy::read(const std::vector<pid_t>& pids, DumpSink& sink,
                                  uint64_t files_max,
                                  const std::function<void(const image::ImageStats&)>& progress) {
  SharedPrecopy out;
  std::map<Key, std::vector<std::pair<pid_t, image::Mapping>>> mapped;
  std::set<Key> privately;
  for (auto& [pid, maps] : proc::read_ranges_of(pids))
    for (auto& m : maps) {
      if (!m.shared && m.inode != 0) privately.insert({m.dev, m.inode});
      if (candidate(m)) mapped[{m.dev, m.inode}].emplace_back(pid, std::move(m));
    }
  // Mapped privately too: its copied-on-write pages are the process's own,
  // the others show the object (the stop would forget what was read).
  std::erase_if(mapped, [&](const auto& kv) { return privately.count(kv.first) > 0; });
  // A file no mapping may write now: not saved in the image (named_shm,
  // saved_file), reading it would be for nothing.
  std::erase_if(mapped, [](const auto& kv) {
    return kv.second.front().second.kind == image::MappingKind::File &&
           std::none_of(kv.second.begin(), kv.second.end(),
                        [](const auto& pm) { return (pm.second.prot & PROT_WRITE) != 0; });
  });
  uint64_t files_bytes = 0;  // of files not on tmpfs
  if (mapped.empty()) return out;
  if (!WriteTracker::supported().ok) {
    vlog("shared memory is write-protected at the stop: {}", WriteTracker::supported().reason);
    return out;
  }
  uint64_t rewritten = 0;  // pages written again while they were read, in all
  for (auto& [key, list] : mapped) {
    const auto& [pid0, first] = list.front();
    const std::string name = name_of(first);
    auto skip = [&](const std::string& why) {
      vlog("{} (pid {}, {:#x}-{:#x}): write-protected at the stop: {}", name, pid0, first.start,
           first.end, why);
    };
    std::string why;
    bool tmpfs = false;
    ScopedFd fd = open_object(pid0, first, &why, &tmpfs);
    if (!fd) {
      if (!why.empty()) skip(why);
      continue;
    }
    // A file elsewhere mapped once: a data file (FilePrecopy's), or read
    // while the job is stopped.
    if (!tmpfs && list.size() < 2) continue;
    const uint64_t len = first.end - first.start;
    const uint64_t data = data_page_bytes(fd.get(), first.pgoff, first.pgoff + len);
    if (data < min_bytes()) continue;
    if (!tmpfs) {
      if (files_bytes + data > files_max) {
        skip("more data files mapped shared than --shared-files-max");
        continue;
      }
      files_bytes += data;
    }
    // Each page of it stored once, under the first mapping: every mapping
    // the same range of it, one in each process.
    std::set<pid_t> seen;
    bool same = true, allowed = true;
    for (const auto& [pid, m] : list) {
      same = same && seen.insert(pid).second && m.pgoff == first.pgoff && m.end - m.start == len;
      // A system call seccomp forbids could kill the job: none is made in
      // a process under seccomp before the stop.
      allowed = allowed && pidview::sees_snaps_pids(pid) && proc::read_status(pid).seccomp == 0;
    }
    if (!same) {
      skip("its mappings differ (ranges of it, or two in one process)");
      continue;
    }
    if (!allowed) {
      skip("a process mapping it runs under seccomp or in a pid namespace of its own");
      continue;
    }
    const int watch = out.watch_.add(fd.get());
    if (watch < 0) {
      skip(fmt::format("no inotify watch: {}", std::strerror(errno)));
      continue;
    }
    Object o{key, first.pgoff, len, name, std::move(fd), watch, {}, {}, 0, false, false, {}};
    // Each process stopped for its userfaultfd() only (at its first
    // object); the write protection is set from snap while it runs again.
    try {
      for (const auto& [pid, m] : list) {
        const int err = out.tracker_of(pid).arm_range(m.start, m.end);
        // A mapping that can never write (a file opened read-only, as
        // PMIx's clients map its segments): nothing to track in it.
        if (err == EPERM && !(m.prot & PROT_WRITE)) {
          o.mapped.push_back({pid, m.start, m.end, false});
          continue;
        }
        if (err)
          throw Error(fmt::format("pid {}: the kernel refused to write-protect it: {}", pid,
                                  std::strerror(err)));
        o.mapped.push_back({pid, m.start, m.end, true});
      }
    } catch (const std::exception& e) {
      for (const auto& mp : o.mapped) out.trackers_.at(mp.pid).disarm_range(mp.start, mp.end);
      skip(e.what());
      continue;
    }
    const pid_t owner = o.mapped.front().pid;
    const uint64_t start = o.mapped.front().start;
    const PageSink as_mapping = [&](pid_t, uint64_t, uint64_t addr, const uint8_t* data,
                                    size_t npages) {
      sink.add_pages(owner, start, addr, data, npages);
      o.given.push_back({addr, addr + npages * kPage});
      o.bytes += npages * kPage;
      if (progress) progress(sink.stats());
    };
    // The object's byte `off` as the first mapping's page at start + off - pgoff.
    if (!read_file_pages(o.fd.get(), o.pgoff, o.pgoff + len, start - o.pgoff, as_mapping, &why)) {
      out.drop(o, sink);
      skip(why);
      continue;
    }
    // What the job wrote of it while it was read: protected again and read
    // again, once, so that the stop reads only what it writes after that;
    // a job that writes it faster than snap reads it: as without this.
    const uint64_t first_read = o.bytes;
    uint64_t again = 0;
    try {
      std::vector<ByteRange> runs;  // as the first mapping's addresses
      std::vector<std::vector<PageRun>> written;
      for (const auto& mp : o.mapped) {
        written.push_back(mp.tracked ? out.trackers_.at(mp.pid).unprotected(mp.start, mp.end)
                                     : std::vector<PageRun>{});
        again += runs_pages(written.back());
        for (const auto& r : written.back())
          runs.push_back({start + (r.start - mp.start), start + (r.end - mp.start)});
      }
      if (static_cast<double>(again * kPage) >
          MemoryPrecopy::kMaxRewritten * static_cast<double>(o.bytes))
        throw Error(fmt::format("{:.1f} MiB of {:.1f} MiB written again while it was read",
                                static_cast<double>(again * kPage) / (1 << 20),
                                static_cast<double>(o.bytes) / (1 << 20)));
      for (size_t i = 0; i < o.mapped.size(); i++)
        if (o.mapped[i].tracked) out.trackers_.at(o.mapped[i].pid).protect_again(written[i]);
      runs = merge_ranges(std::move(runs));
      sink.forget_pages(owner, start, runs);
      read_again(o.fd.get(), runs, o.pgoff - start, [&](uint64_t addr, const uint8_t* data,
                                                       size_t npages) {
        as_mapping(owner, start, addr, data, npages);
      });
    } catch (const std::exception& e) {
      out.drop(o, sink);
      skip(e.what());
      continue;
    }
    rewritten += again;
    vlog("{}: {:.1f} MiB, mapped by {} process(es), read while the job ran ({:.1f} MiB of it "
         "written meanwhile, read again)", name, static_cast<double>(first_read) / (1 << 20),
         o.mapped.size(), static_cast<double>(again * kPage) / (1 << 20));
    out.objects_.push_back(std::move(o));
  }
  // The pages written again by the stop are read again then: room for them
  // to take the places of their first copies.
  if (!out.objects_.empty()) MemoryPrecopy::reserve_places_for(sink, rewritten);
  return out;
}

void SharedPrecopy::drop(Object& o, DumpSink& sink) {
  sink.forget(o.mapped.front().pid, o.mapped.front().start);
  for (const auto& mp : o.mapped) trackers_.at(mp.pid).disarm_range(mp.start, mp.end);
  o.kept = false;
}

WriteTracker& SharedPrecopy::tracker_of(pid_t pid) {
  if (auto it = trackers_.find(pid); it != trackers_.end()) return it->second;
  std::optional<WriteTracker> t;
  {
    auto task = Task::seize_and_stop(pid);
    parasite::GuardedSyscalls guarded(*task);
    t.emplace(WriteTracker::open(guarded.rs()));
  }  // it runs again
  return trackers_.emplace(pid, std::move(*t)).first->second;
}

uint64_t SharedPrecopy::min_bytes() {
  static const uint64_t bytes = [] {
    const char* s = std::getenv("SNAP_SHARED_PRECOPY_MIN_BYTES");
    return s && *s ? std::strtoull(s, nullptr, 10) : kMinBytes;
  }();
  return bytes;
}

void SharedPrecopy::settle(const image::Checkpoint& ckpt, DumpSink& sink) {
  if (objects_.empty()) return;
  // What the watches saw: write(2), truncate, fallocate and MADV_REMOVE.
  for (auto& o : objects_) o.changed = watch_.changed(o.watch);
  std::map<Key, std::vector<std::pair<pid_t, const image::Mapping*>>> now;  // the stopped tree's
  for (const auto& p : ckpt.processes)
    for (const auto& m : p.mappings) now[{m.dev, m.inode}].emplace_back(p.pid, &m);
  for (auto& o : objects_) {
    const auto& maps = now[o.key];
    std::string why;
    if (o.changed) {
      why = "changed other than through its mappings (write(2), truncate, fallocate, MADV_REMOVE)";
    } else if (maps.size() != o.mapped.size() ||
               !std::all_of(maps.begin(), maps.end(), [&](const auto& pm) {
                 return pm.second->shared && pm.second->pgoff == o.pgoff &&
                        std::any_of(o.mapped.begin(), o.mapped.end(), [&](const Mapped& mp) {
                          // One not tracked may still never write (unmapped
                          // and mapped again writable, at the same place).
                          return mp.pid == pm.first && mp.start == pm.second->start &&
                                 mp.end == pm.second->end &&
                                 (mp.tracked || !image::has_vmflag(pm.second->vmflags, "mw"));
                        });
               })) {
      why = "mapped otherwise since";
    } else if (maps.front().second->kind == image::MappingKind::File &&
               !maps.front().second->named_shm && !maps.front().second->saved_file) {
      why = "not saved";
    }
    const uint64_t start = o.mapped.front().start;
    // Written in any process since it was armed (its page-table entry gone
    // since counts as written), as the first mapping's addresses: read
    // again while stopped. What no page table shows (a hole punched, the
    // object truncated) the watch saw. A page first filled since by a read
    // (a hole then) holds zeros, as the hole read did.
    std::vector<ByteRange> written;
    if (why.empty()) {
      try {
        std::vector<std::vector<PageRun>> runs(o.mapped.size());
        parallel_for(o.mapped.size(), 2, [&](size_t i) {
          const Mapped& mp = o.mapped[i];
          if (mp.tracked) runs[i] = trackers_.at(mp.pid).unprotected(mp.start, mp.end);
        });
        for (size_t i = 0; i < runs.size(); i++)
          for (const auto& r : runs[i])
            written.push_back({start + (r.start - o.mapped[i].start),
                               start + (r.end - o.mapped[i].start)});
        written = merge_ranges(std::move(written));
      } catch (const std::exception& e) {
        why = e.what();
      }
    }
    const auto given = merge_ranges(std::move(o.given));
    if (why.empty() && bytes_of(written) > bytes_of(given) / 2) why = "mostly written since";
    if (!why.empty()) {
      drop(o, sink);
      vlog("{}: what was read while the job ran is not used ({}): write-protected at the stop",
           o.name, why);
      continue;
    }
    sink.forget_pages(o.mapped.front().pid, start, written);
    for (const auto& [a, b] : written)
      for (uint64_t at = a; at < b; at += kPage) o.again.push_back(at);
    bytes_again_ += bytes_of(written);
    bytes_before_ += bytes_of(subtract_ranges(given, written));
    o.kept = true;
  }
  if (used())
    vlog("shared memory read while the job ran: {:.1f} MiB kept, {:.1f} MiB written since, read "
         "while it is stopped",
         static_cast<double>(bytes_before_) / (1 << 20),
         static_cast<double>(bytes_again_) / (1 << 20));
}

std::set<SharedPrecopy::Key> SharedPrecopy::kept() const {
  std::set<Key> out;
  for (const auto& o : objects_)
    if (o.kept) out.insert(o.key);
  return out;
}

std::optional<std::vector<uint64_t>> SharedPrecopy::pages(pid_t pid,
                                                          const image::Mapping& m) const {
  for (const auto& o : objects_) {
    if (!o.kept) continue;
    for (size_t i = 0; i < o.mapped.size(); i++)
      if (o.mapped[i].pid == pid && o.mapped[i].start == m.start)
        return i == 0 ? o.again : std::vector<uint64_t>{};
  }
  return std::nullopt;
}

std::vector<WriteTracker> SharedPrecopy::take_trackers() {
  std::vector<WriteTracker> out;
  for (auto& [pid, t] : trackers_)
    if (!t.armed().empty()) out.push_back(std::move(t));
  trackers_.clear();  // the others close here: nothing is armed in them
  return out;
}

}  // namespace snap::job
