// FilePlanner's shared memory (restore/file_planner.h): each shared memory
// object the image maps is one memfd, or for a file that was in /dev/shm
// that file made again, sized and filled with its saved pages.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <map>
#include <set>
#include <utility>
#include <vector>
#include <fmt/core.h>

#include "base/byte_ranges.h"
#include "base/error.h"
#include "base/file_extents.h"
#include "base/log.h"
#include "restore/file_planner.h"
#include "restore/fill.h"
#include "restore/ghosts.h"

namespace snap::restore {

ShmKey shm_key(const image::Mapping& m) { return {m.dev, m.inode}; }

int FilePlanner::memfd_for(const image::Mapping& m) {
  ShmKey key = shm_key(m);
  if (auto it = shm_.find(key); it != shm_.end()) return it->second;
  // memfd names show in /proc/PID/maps: keep a memfd's own name.
  std::string name(image::kAnonShmemName);
  if (m.path.starts_with("/memfd:")) {
    name = m.path.substr(7);
    if (auto d = name.rfind(" (deleted)"); d != std::string::npos) name.resize(d);
  }
  // Memory from the hugetlb pool comes back there, in pages of its size
  // (MFD_HUGE_SHIFT: its log2).
  unsigned flags = MFD_CLOEXEC;
  if (m.hugetlb_page)
    flags |= MFD_HUGETLB | (static_cast<unsigned>(std::countr_zero(m.hugetlb_page)) << MFD_HUGE_SHIFT);
  int fd = keep(::memfd_create(name.c_str(), flags), "memfd_create for " + m.path);
  shm_[key] = fd;
  return fd;
}

// The shared memory files of the image, each once, made again at their
// paths before any fd refers to them; filled by fill_shared_memory(). One
// made where no file was is removed again if the restore fails.
void FilePlanner::remake_named_shm() {
  for (const auto& p : ckpt_.processes)
    for (const auto& m : p.mappings)
      if (m.saved_file && !shm_.count(shm_key(m))) {
        // A data file the job wrote through memory: written in place below
        // (fill_shared_memory), the rest of it left as it is.
        ScopedFd fd(::open(m.path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
        struct stat st {};
        if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
          throw SysError(fmt::format("cannot restore pid {}: open {} to write back what the job "
                                     "had written into it through a shared mapping",
                                     p.pid, m.path),
                         fd ? EINVAL : errno,
                         "the job maps this file; it must be at its path, a regular file the "
                         "restoring user may write");
        shm_[shm_key(m)] = keep(fd.release(), "opening " + m.path);
      }
  for (const auto& p : ckpt_.processes)
    for (const auto& m : p.mappings)
      if (m.named_shm && !shm_.count(shm_key(m))) {
        bool was_there = false;
        ScopedFd fd = make_named_shm(m, out_.warnings_, &was_there);
        if (!was_there) out_.made_paths_.push_back(m.path);  // removed if the restore fails
        shm_[shm_key(m)] = keep(fd.release(), "making " + m.path);
      }
}

namespace {

// Zeros [a, b) of the file open on `fd`: a hole where the file system
// makes one, else written zeros.
void zero_range(int fd, uint64_t a, uint64_t b, const std::string& path) {
  if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(a),
                  static_cast<off_t>(b - a)) == 0)
    return;
  static const std::vector<uint8_t> zeros(1 << 20, 0);
  for (uint64_t at = a; at < b;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(b - at, zeros.size()));
    const ssize_t w = ::pwrite(fd, zeros.data(), n, static_cast<off_t>(at));
    if (w <= 0)
      throw SysError(fmt::format("cannot restore {}: writing zeros at offset {}", path, at), errno);
    at += static_cast<uint64_t>(w);
  }
}

}  // namespace

// Each data file the job wrote through a shared mapping (saved_file) gets
// back, in the ranges the job mapped, what it held at the dump: the saved
// pages written, the rest of those ranges that holds data now (the job
// wrote there after the dump) zeroed, as it was; its size, if it is
// smaller now, as it was. Bytes outside the mapped ranges are left as they
// are. Returns the bytes written.
uint64_t FilePlanner::put_back_saved_files() {
  std::map<ShmKey, std::vector<std::pair<pid_t, const image::Mapping*>>> files;
  for (const auto& p : ckpt_.processes)
    for (const auto& m : p.mappings)
      if (m.saved_file) files[shm_key(m)].push_back({p.pid, &m});
  uint64_t written = 0;
  for (const auto& [key, mappings] : files) {
    const int fd = shm_.at(key);
    const image::Mapping& first = *mappings.front().second;
    const uint64_t size = first.saved_file->size;
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw SysError("fstat " + first.path, errno);
    if (static_cast<uint64_t>(st.st_size) < size && ::ftruncate(fd, static_cast<off_t>(size)) != 0)
      throw SysError(fmt::format("cannot restore {}: ftruncate to its {} bytes at the dump",
                                 first.path, size), errno);
    std::vector<ByteRange> mapped, stored;
    for (const auto& [pid, m] : mappings) {
      const uint64_t end = std::min(m->pgoff + (m->end - m->start), size);
      if (m->pgoff < end) mapped.push_back({m->pgoff, end});
      img_.for_each_piece(pid, m->start, [&](const image::PagePiece& pc) {
        if (pc.kind == image::PagePiece::kZero) return;
        const uint64_t at = m->pgoff + (pc.addr - m->start);
        stored.push_back({at, at + uint64_t{pc.npages} * image::kPageSize});
      });
    }
    const uint64_t bytes = fill_file(fd, mappings, img_, fill_);
    written += bytes;
    // Whole pages were written: a size that is not a multiple of the page
    // size is set again (the larger of the dump's and the file's now).
    const uint64_t keep_size = std::max<uint64_t>(static_cast<uint64_t>(st.st_size), size);
    struct stat after {};
    if (::fstat(fd, &after) == 0 && static_cast<uint64_t>(after.st_size) > keep_size &&
        ::ftruncate(fd, static_cast<off_t>(keep_size)) != 0)
      throw SysError(fmt::format("cannot restore {}: ftruncate to {} bytes", first.path, keep_size),
                     errno);
    // What holds data now in the mapped ranges but was not saved (zeros or
    // a hole at the dump): zeroed.
    uint64_t zeroed = 0;
    for (const auto& [a, b] : subtract_ranges(merge_ranges(mapped), merge_ranges(stored)))
      for_each_data_range(fd, a, b, [&](uint64_t data, uint64_t end) {
        zero_range(fd, data, end, first.path);
        zeroed += end - data;
        return end;
      });
    vlog("restore: {}: what the job mapped of it put back as at the dump ({} MiB written, {} "
         "KiB zeroed)", first.path, bytes >> 20, zeroed >> 10);
  }
  return written;
}

// Sizes every shared memory object and writes its saved pages.
void FilePlanner::fill_shared_memory() {
  std::map<ShmKey, uint64_t> size;
  std::set<ShmKey> named;  // sized when made (remake_named_shm), and again below
  for (const auto& p : ckpt_.processes)
    for (const auto& m : p.mappings)
      if (m.named_shm) {
        named.insert(shm_key(m));
        size[shm_key(m)] = m.named_shm->size;
      } else if (is_shm_object(m) && !m.ghost && !m.saved_file) {
        auto& s = size[shm_key(m)];
        s = std::max(s, m.pgoff + (m.end - m.start));
      }
  for (const auto& [key, bytes] : size)
    if (!named.count(key) && ::ftruncate(shm_.at(key), static_cast<off_t>(bytes)) < 0)
      throw SysError(fmt::format("ftruncate of shared memory ({} bytes)", bytes), errno);
  // Each object's pages, from every mapping that saved some, read and
  // written by the workers that fill private memory (restore/fill.h).
  std::map<ShmKey, std::vector<std::pair<pid_t, const image::Mapping*>>> saved;
  std::map<uint64_t, std::vector<std::pair<pid_t, const image::Mapping*>>> ghosts;
  for (const auto& p : ckpt_.processes)
    for (const auto& m : p.mappings)
      if (is_shm_object(m) && m.pages_dumped && !m.saved_file)
        (m.ghost ? ghosts[m.ghost] : saved[shm_key(m)]).push_back({p.pid, &m});
  auto t0 = std::chrono::steady_clock::now();
  uint64_t written = 0;
  for (const auto& [key, mappings] : saved) written += fill_file(shm_.at(key), mappings, img_, fill_);
  written += put_back_saved_files();
  // A deleted file or memfd the job mapped shared: the contents of what it
  // mapped are the mappings' pages (the dump did not read them from the
  // file again, from image version 9). Whole pages: its size is set again.
  for (const auto& [id, mappings] : ghosts) {
    const int held = ghost_fd(id, fmt::format("pid {} {}", mappings[0].first, mappings[0].second->path));
    const auto& g = *std::find_if(ckpt_.ghost_files.begin(), ckpt_.ghost_files.end(),
                                  [&](const image::GhostFile& f) { return f.id == id; });
    if (!image::filled_from_mappings(g)) continue;  // all in the file already
    // Written through an fd of its own: snap holds an executable read-only.
    ScopedFd fd(::open(fmt::format("/proc/self/fd/{}", held).c_str(), O_RDWR | O_CLOEXEC));
    if (!fd) throw SysError(fmt::format("cannot restore {}: reopening it to write", g.path), errno);
    written += fill_file(fd.get(), mappings, img_, fill_);
    if (::ftruncate(fd.get(), static_cast<off_t>(g.size)) < 0)
      throw SysError(fmt::format("cannot restore {}: ftruncate to {} bytes", g.path, g.size), errno);
  }
  // Whole pages were written: a shared memory file whose size is not a
  // multiple of the page size has it again.
  for (const auto& key : named)
    if (::ftruncate(shm_.at(key), static_cast<off_t>(size.at(key))) < 0)
      throw SysError(fmt::format("ftruncate of a shared memory file ({} bytes)", size.at(key)), errno);
  if (!saved.empty() || !ghosts.empty())
    vlog("restore: {} shared memory object(s): {} MiB written in {:.3f} s", saved.size() + ghosts.size(),
         written >> 20,
         std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

}  // namespace snap::restore
