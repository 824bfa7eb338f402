// FilePlanner's shared memory (restore/file_planner.h): each shared memory
// object the image maps is one memfd, or for a file that was in /dev/shm
// that file made again, sized and filled with its saved pages.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "restore/file_planner.h"
#include "restore/fill.h"

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

namespace {

// A shared memory file of the image (image::Mapping::named_shm) made again
// at its path, empty, of its size, mode and (as root) owner: created beside
// it, then renamed over it, so that a file left there is replaced whole and
// a process still holding that one keeps it.
ScopedFd make_named_shm(const image::Mapping& m, std::vector<std::string>& warnings, bool* was_there) {
  const auto& n = *m.named_shm;
  const std::string what = "cannot make the shared memory file " + m.path + " again";
  std::random_device rd;
  std::string tmp;
  ScopedFd fd;
  for (int i = 0; i < 64 && !fd; i++) {
    tmp = fmt::format("{}.snap-shm-{:08x}", m.path, rd());
    fd.reset(::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd && errno != EEXIST)
      throw SysError(what + ": create " + tmp, errno,
                     "its directory must exist and be writable by the user who restores");
  }
  if (!fd) throw SysError(what + ": create " + tmp, EEXIST);
  auto fail = [&](const std::string& step) {
    int err = errno;
    ::unlink(tmp.c_str());
    return SysError(what + ": " + step, err);
  };
  if (::ftruncate(fd.get(), static_cast<off_t>(n.size)) != 0) throw fail("ftruncate");
  if (::fchmod(fd.get(), n.mode & 07777) != 0) throw fail("fchmod");
  struct stat st {};
  if (::fstat(fd.get(), &st) == 0 && (st.st_uid != n.uid || st.st_gid != n.gid) &&
      ::fchown(fd.get(), n.uid, n.gid) != 0)
    warnings.push_back(fmt::format("{}: owned by uid {} gid {} now, not {} {} as at the dump ({})",
                                   m.path, st.st_uid, st.st_gid, n.uid, n.gid, std::strerror(errno)));
  struct stat old {};
  *was_there = ::lstat(m.path.c_str(), &old) == 0;
  if (::rename(tmp.c_str(), m.path.c_str()) != 0) throw fail("rename " + tmp + " to it");
  return fd;
}

}  // namespace

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
  for (const auto& p : ckpt_.processes)
    for (const auto& m : p.mappings)
      if (is_shm_object(m) && !m.ghost && !m.named_shm) {  // a named one has its size
        auto& s = size[shm_key(m)];
        s = std::max(s, m.pgoff + (m.end - m.start));
      }
  for (const auto& [key, bytes] : size)
    if (::ftruncate(shm_.at(key), static_cast<off_t>(bytes)) < 0)
      throw SysError(fmt::format("ftruncate of shared memory ({} bytes)", bytes), errno);
  // Each object's pages, from every mapping that saved some, read and
  // written by the workers that fill private memory (restore/fill.h).
  std::map<ShmKey, std::vector<std::pair<pid_t, const image::Mapping*>>> saved;
  for (const auto& p : ckpt_.processes)
    for (const auto& m : p.mappings)
      // A deleted file or memfd has its contents from the image already.
      if (is_shm_object(m) && m.pages_dumped && !m.ghost) saved[shm_key(m)].push_back({p.pid, &m});
  auto t0 = std::chrono::steady_clock::now();
  uint64_t written = 0;
  for (const auto& [key, mappings] : saved) written += fill_file(shm_.at(key), mappings, img_, fill_);
  // Whole pages were written: a shared memory file whose size is not a
  // multiple of the page size has it again.
  for (const auto& p : ckpt_.processes)
    for (const auto& m : p.mappings)
      if (m.named_shm && ::ftruncate(shm_.at(shm_key(m)), static_cast<off_t>(m.named_shm->size)) < 0)
        throw SysError(fmt::format("ftruncate of {} ({} bytes)", m.path, m.named_shm->size), errno);
  if (!saved.empty())
    vlog("restore: {} shared memory object(s): {} MiB written in {:.3f} s", saved.size(),
         written >> 20,
         std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

}  // namespace snap::restore
