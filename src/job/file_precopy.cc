#include "job/file_precopy.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include <fmt/core.h>

#include "base/error.h"
#include "base/file_extents.h"
#include "base/log.h"
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

using FileKey = std::pair<uint64_t, uint64_t>;  // (dev, inode)

// The mapped file, opened by snap (open_mapped_file), where it is a
// regular file not on tmpfs.
ScopedFd open_data_file(pid_t pid, const image::Mapping& m) {
  ScopedFd fd = open_mapped_file(pid, m);
  struct stat st {};
  struct statfs fs {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
      ::fstatfs(fd.get(), &fs) != 0 || fs.f_type == TMPFS_MAGIC)
    return {};
  return fd;
}

}  // namespace

FilePrecopy FilePrecopy::read(const std::vector<pid_t>& pids, DumpSink& sink, uint64_t max_bytes,
                              const std::function<void(const image::ImageStats&)>& progress) {
  FilePrecopy out;
  // The files mapped in the tree, and the writable shared mappings of them.
  std::map<FileKey, int> mappings_of;
  std::vector<std::pair<pid_t, image::Mapping>> writable;
  for (auto& [pid, maps] : proc::read_ranges_of(pids))
    for (auto& m : maps) {
      if (m.kind != image::MappingKind::File) continue;
      mappings_of[{m.dev, m.inode}]++;
      if (m.shared && (m.prot & PROT_WRITE) && m.path.starts_with('/') &&
          !m.path.ends_with(" (deleted)"))
        writable.emplace_back(pid, std::move(m));
    }
  if (writable.empty()) return out;
  if (!WriteTracker::supported().ok) {
    vlog("data files mapped shared are read while the job is stopped: {}",
         WriteTracker::supported().reason);
    return out;
  }

  struct Candidate {
    pid_t pid;
    image::Mapping m;
    ScopedFd fd;
    int watch;
  };
  std::vector<Candidate> chosen;
  uint64_t total = 0;
  for (auto& [pid, m] : writable) {
    if (mappings_of[{m.dev, m.inode}] != 1 || !pidview::sees_snaps_pids(pid)) continue;
    ScopedFd fd = open_data_file(pid, m);
    if (!fd) continue;
    const uint64_t bytes = data_page_bytes(fd.get(), m.pgoff, m.pgoff + (m.end - m.start));
    // At the stop the mapping's whole page table is read (~10 ms a GiB of
    // range here): a sparse one costs more so than its data while stopped.
    if (bytes < kMinBytes || total + bytes > max_bytes || m.end - m.start > 16 * bytes) continue;
    const int watch = out.watch_.add(fd.get());
    if (watch < 0) {
      vlog("{}: read while the job is stopped (no inotify watch: {})", m.path,
           std::strerror(errno));
      continue;
    }
    total += bytes;
    chosen.push_back({pid, std::move(m), std::move(fd), watch});
  }
  if (chosen.empty()) return out;

  // Each process stopped for its userfaultfd() only; the write protection
  // is set from snap while it runs again.
  std::set<pid_t> tried;
  for (const auto& c : chosen) {
    if (!tried.insert(c.pid).second) continue;
    std::vector<PageRun> ranges;
    for (const auto& d : chosen)
      if (d.pid == c.pid) ranges.push_back({d.m.start, d.m.end});
    std::sort(ranges.begin(), ranges.end(),
              [](const PageRun& a, const PageRun& b) { return a.start < b.start; });
    try {
      // A system call seccomp forbids could kill the job: none is made in
      // a leader under seccomp (the stop refuses or reads it all anyway).
      if (proc::read_status(c.pid).seccomp != 0)
        throw Error("it runs under seccomp: no system call is made in it before the stop");
      std::optional<WriteTracker> t;
      {
        auto task = Task::seize_and_stop(c.pid);
        parasite::GuardedSyscalls guarded(*task);
        t.emplace(WriteTracker::open(guarded.rs()));
      }  // it runs again: protected from snap, a piece at a time
      t->arm_exactly(ranges);
      out.trackers_.emplace(c.pid, std::move(*t));
    } catch (const std::exception& e) {
      vlog("pid {}: its data files mapped shared are read while it is stopped: {}", c.pid,
           e.what());
    }
  }

  for (auto& c : chosen) {
    auto t = out.trackers_.find(c.pid);
    if (t == out.trackers_.end()) continue;
    const auto& ranges = t->second.armed();
    if (std::none_of(ranges.begin(), ranges.end(),
                     [&](const PageRun& r) { return r.start == c.m.start && r.end == c.m.end; }))
      continue;  // the kernel refused the range (another userfaultfd's, say)
    // The file's byte `off` as the mapping's page at start + off - pgoff
    // (read_file_pages' address of byte 0, modulo 2^64).
    uint64_t bytes = 0;
    std::string why;
    const PageSink as_mapping = [&](pid_t, uint64_t, uint64_t addr, const uint8_t* data,
                                    size_t npages) {
      sink.add_pages(c.pid, c.m.start, addr, data, npages);
      bytes += npages * kPage;
      if (progress) progress(sink.stats());
    };
    if (!read_file_pages(c.fd.get(), c.m.pgoff, c.m.pgoff + (c.m.end - c.m.start),
                         c.m.start - c.m.pgoff, as_mapping, &why)) {
      sink.forget(c.pid, c.m.start);
      vlog("{}: read while the job is stopped: {}", c.m.path, why);
      continue;
    }
    out.bytes_before_ += bytes;
    out.files_.push_back({c.pid, std::move(c.m), c.watch, bytes, false, false, {}});
  }
  if (!out.files_.empty())
    vlog("{} data file(s) mapped shared, {:.1f} MiB, read while the job ran; the pages it writes "
         "meanwhile are read again while it is stopped",
         out.files_.size(), static_cast<double>(out.bytes_before_) / (1 << 20));
  // The pages written again by the stop are read again then, while the job
  // is stopped: room for them to take the places of their first copies.
  uint64_t rewritten = 0;  // while the files were read
  for (const auto& f : out.files_)
    rewritten += out.trackers_.at(f.pid).written_pages({{f.mapping.start, f.mapping.end}});
  if (!out.files_.empty()) MemoryPrecopy::reserve_places_for(sink, rewritten);
  return out;
}

void FilePrecopy::settle(const image::Checkpoint& ckpt, DumpSink& sink) {
  if (files_.empty()) return;
  // What the watches saw: write(2), truncate, fallocate.
  for (auto& f : files_) f.changed = watch_.changed(f.watch);
  std::map<FileKey, int> mappings_of;  // in the stopped tree
  for (const auto& p : ckpt.processes)
    for (const auto& m : p.mappings)
      if (m.kind == image::MappingKind::File) mappings_of[{m.dev, m.inode}]++;
  for (auto& f : files_) {
    const image::Mapping* now = nullptr;
    for (const auto& p : ckpt.processes)
      if (p.pid == f.pid && !p.zombie)
        for (const auto& m : p.mappings)
          if (m.start == f.mapping.start) now = &m;
    const char* why = nullptr;
    if (f.changed)
      why = "written other than through the mapping (write(2), truncate, fallocate)";
    else if (!now || now->end != f.mapping.end || now->pgoff != f.mapping.pgoff ||
             now->dev != f.mapping.dev || now->inode != f.mapping.inode || !now->shared)
      why = "mapped otherwise since";
    else if (!now->saved_file && !now->named_shm)
      why = "not saved";
    else if (mappings_of[{now->dev, now->inode}] != 1)
      why = "mapped again since";
    if (why) {
      sink.forget(f.pid, f.mapping.start);
      bytes_before_ -= f.bytes;
      vlog("{}: what was read while the job ran is not used ({}){}", f.mapping.path, why,
           now && (now->saved_file || now->named_shm) ? ": read while it is stopped" : "");
      continue;
    }
    std::vector<ByteRange> written;
    for (const auto& r : trackers_.at(f.pid).unprotected(f.mapping.start, f.mapping.end)) {
      written.push_back({r.start, r.end});
      for (uint64_t a = r.start; a < r.end; a += kPage) f.again.push_back(a);
    }
    sink.forget_pages(f.pid, f.mapping.start, written);
    bytes_again_ += f.again.size() * kPage;
    f.kept = true;
    kept_++;
  }
}

std::vector<WriteTracker> FilePrecopy::take_trackers() {
  std::vector<WriteTracker> out;
  for (auto& [pid, t] : trackers_) out.push_back(std::move(t));
  trackers_.clear();
  return out;
}

std::optional<std::vector<uint64_t>> FilePrecopy::pages(pid_t pid, const image::Mapping& m) const {
  for (const auto& f : files_)
    if (f.kept && f.pid == pid && f.mapping.start == m.start) return f.again;
  return std::nullopt;
}

}  // namespace snap::job
