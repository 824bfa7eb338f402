#include "tracer/named_shm.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "base/byte_ranges.h"
#include "base/file_extents.h"
#include "base/log.h"
#include "base/scoped_fd.h"
#include "tracer/temp_files.h"

namespace snap {

namespace {

// Whether every data extent of `fd` (size `size`) lies within `mapped`
// (sorted, merged), in whole pages.
bool data_within(int fd, uint64_t size, const std::vector<ByteRange>& mapped) {
  auto covered = [&](uint64_t a, uint64_t b) {
    auto it = std::upper_bound(mapped.begin(), mapped.end(), ByteRange{a, UINT64_MAX});
    if (it == mapped.begin()) return false;
    --it;
    return it->first <= a && b <= it->second;
  };
  bool within = true;
  for_each_data_range(fd, 0, size, [&](uint64_t data, uint64_t hole) -> uint64_t {
    const uint64_t a = data & ~uint64_t{image::kPageSize - 1};
    const uint64_t b = (hole + image::kPageSize - 1) & ~uint64_t{image::kPageSize - 1};
    within = covered(a, b);
    return within ? hole : size;
  });
  return within;
}

// The bytes of data (SEEK_DATA, in whole pages) of `fd` (size `size`)
// within `mapped` (sorted, merged): what saving those ranges reads.
uint64_t data_bytes_within(int fd, uint64_t size, const std::vector<ByteRange>& mapped) {
  uint64_t total = 0;
  for (auto [a, b] : mapped) total += data_page_bytes(fd, a, std::min(b, size));
  return total;
}

}  // namespace

void mark_named_shared_memory(image::Checkpoint& ckpt, const std::vector<std::string>& temp_roots,
                              const FileViews& views, uint64_t saved_files_max) {
  uint64_t saved_bytes = 0;  // of files marked saved_file
  // Files an fd of the tree holds a lock on, by inode: SQLite's WAL index
  // (the -shm file), a database's lock region. Such a file is coordinated
  // with whoever else locks it, another process reading the database say,
  // and goes with other files (the WAL, the database) that a restore does
  // not put back: putting back this one alone would show them an index of
  // another time. It is left as it is, as before.
  std::set<uint64_t> locked;
  for (const auto& p : ckpt.processes)
    for (const auto& f : p.fds)
      if (!f.locks.empty()) locked.insert(f.inode);
  std::map<std::pair<uint64_t, uint64_t>, std::vector<image::Mapping*>> files;  // (dev, inode)
  std::map<std::pair<uint64_t, uint64_t>, pid_t> first_mapper;  // whose path is looked at
  for (auto& p : ckpt.processes) {
    if (p.zombie) continue;
    for (auto& m : p.mappings)
      if (m.kind == image::MappingKind::File && m.shared && !m.ghost && m.path.starts_with("/") &&
          !m.path.ends_with(" (deleted)")) {
        files[{m.dev, m.inode}].push_back(&m);
        first_mapper.emplace(std::pair{m.dev, m.inode}, p.pid);
      }
  }
  for (auto& [key, maps] : files) {
    // Memory the job may write: a file only ever mapped read-only (data
    // staged in /dev/shm, say) stays the file, as any other.
    if (std::none_of(maps.begin(), maps.end(),
                     [](const image::Mapping* m) { return image::has_vmflag(m->vmflags, "mw"); }))
      continue;
    const std::string& path = maps.front()->path;
    ScopedFd fd(::open(views.path(first_mapper.at(key), path).c_str(),
                       O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    struct statfs fs {};
    struct stat st {};
    if (!fd || ::fstatfs(fd.get(), &fs) != 0 || ::fstat(fd.get(), &st) != 0 ||
        !S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_dev) != key.first ||
        static_cast<uint64_t>(st.st_ino) != key.second)
      continue;
    std::vector<ByteRange> mapped;
    for (const auto* m : maps) mapped.push_back({m->pgoff, m->pgoff + (m->end - m->start)});
    const std::vector<ByteRange> merged = merge_ranges(std::move(mapped));
    const auto size = static_cast<uint64_t>(st.st_size);
    if (locked.count(key.second)) {
      vlog("{}: mapped shared and locked by the job: coordinated with whoever else locks it, "
           "left as a restore finds it (or, in a temporary directory, as any file there)", path);
      continue;
    }
    if ((fs.f_type != TMPFS_MAGIC && temp_root_of(path, temp_roots).empty()) ||
        !data_within(fd.get(), size, merged)) {
      // A data file the job writes through memory (or shared memory with
      // data outside what the job maps: the image would not hold all of
      // it): the mapped part of it is saved, and written back into the
      // file at restore.
      const uint64_t bytes = data_bytes_within(fd.get(), size, merged);
      if (saved_bytes + bytes > saved_files_max) {
        warn("pid {} maps {} shared and may write it: the {:.1f} MiB of data it maps would pass "
             "the {:.1f} "
             "GiB of such files a dump saves (--shared-files-max); not saved, a restore finds "
             "the file as it is then",
             first_mapper.at(key), path, static_cast<double>(bytes) / (1 << 20),
             static_cast<double>(saved_files_max) / (1 << 30));
        continue;
      }
      saved_bytes += bytes;
      for (auto* m : maps) m->saved_file = image::Mapping::SavedFile{size};
      vlog("{}: a file the job maps shared and may write: the {:.1f} MiB of data it maps saved "
           "in the image, written back at restore", path, static_cast<double>(bytes) / (1 << 20));
      continue;
    }
    for (auto* m : maps)
      m->named_shm = image::Mapping::NamedShm{size, st.st_mode, st.st_uid, st.st_gid};
    vlog("{}: shared memory file ({} bytes), saved in the image", path, size);
  }
}

}  // namespace snap
