// FilePlanner's shared memory (restore/file_planner.h): each shared memory
// object the image maps is one memfd, or for a file that was in /dev/shm
// that file made again, sized and filled with its saved pages.
#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <set>
#include <fmt/core.h>

#include "base/error.h"
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
      if (m.named_shm && !shm_.count(shm_key(m))) {
        bool was_there = false;
        ScopedFd fd = make_named_shm(m, out_.warnings_, &was_there);
        if (!was_there) out_.made_paths_.push_back(m.path);  // removed if the restore fails
        shm_[shm_key(m)] = keep(fd.release(), "making " + m.path);
      }
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
      } else if (is_shm_object(m) && !m.ghost) {
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
      if (is_shm_object(m) && m.pages_dumped)
        (m.ghost ? ghosts[m.ghost] : saved[shm_key(m)]).push_back({p.pid, &m});
  auto t0 = std::chrono::steady_clock::now();
  uint64_t written = 0;
  for (const auto& [key, mappings] : saved) written += fill_file(shm_.at(key), mappings, img_, fill_);
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
