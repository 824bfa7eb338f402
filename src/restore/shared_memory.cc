// FilePlanner's shared memory (restore/file_planner.h): each shared memory
// object the image maps is one memfd, sized and filled with its saved pages.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <fmt/core.h>

#include "base/error.h"
#include "restore/file_planner.h"

namespace snap::restore {

ShmKey shm_key(const image::Mapping& m) { return {m.dev, m.inode}; }

int FilePlanner::memfd_for(const image::Mapping& m) {
  ShmKey key = shm_key(m);
  if (auto it = shm_.find(key); it != shm_.end()) return it->second;
  // memfd names show in /proc/PID/maps: keep a memfd's own name.
  std::string name = "snap-shm";
  if (m.path.starts_with("/memfd:")) {
    name = m.path.substr(7);
    if (auto d = name.rfind(" (deleted)"); d != std::string::npos) name.resize(d);
  }
  int fd = keep(::memfd_create(name.c_str(), MFD_CLOEXEC), "memfd_create for " + m.path);
  shm_[key] = fd;
  return fd;
}

// Sizes every shared memory object and writes its saved pages.
void FilePlanner::fill_shared_memory() {
  std::map<ShmKey, uint64_t> size;
  for (const auto& p : ckpt_.processes)
    for (const auto& m : p.mappings)
      if (is_shm_object(m) && !m.ghost) {
        auto& s = size[shm_key(m)];
        s = std::max(s, m.pgoff + (m.end - m.start));
      }
  for (const auto& [key, bytes] : size)
    if (::ftruncate(shm_.at(key), static_cast<off_t>(bytes)) < 0)
      throw SysError(fmt::format("ftruncate of shared memory ({} bytes)", bytes), errno);
  for (const auto& p : ckpt_.processes)
    for (const auto& m : p.mappings) {
      // A deleted file or memfd has its contents from the image already.
      if (!is_shm_object(m) || !m.pages_dumped || m.ghost) continue;
      int fd = shm_.at(shm_key(m));
      img_.for_each_run(p.pid, m.start, [&](const image::PageRun& run) {
        if (run.zero()) return;  // a new memfd reads as zeros
        size_t bytes = run.npages * image::kPageSize;
        uint64_t off = m.pgoff + (run.addr - m.start);
        for (size_t done = 0; done < bytes;) {
          ssize_t n = ::pwrite(fd, run.data + done, bytes - done, static_cast<off_t>(off + done));
          if (n <= 0) throw SysError("writing shared memory " + m.path, n < 0 ? errno : EIO);
          done += static_cast<size_t>(n);
        }
      });
    }
}

}  // namespace snap::restore
