#include "tracer/ghost_files.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

#include <fmt/core.h>
#include <map>
#include <utility>

#include "base/error.h"
#include "base/file_extents.h"
#include "base/scoped_fd.h"
#include "tracer/file_pages.h"

namespace snap {

namespace {

using image::GhostFile;

constexpr std::string_view kDeleted = " (deleted)";
constexpr std::string_view kMemfd = "/memfd:";

bool is_deleted(const std::string& path) { return path.ends_with(kDeleted); }
bool is_memfd(const std::string& path) { return path.starts_with(kMemfd); }
// Anonymous shared memory (MAP_SHARED | MAP_ANONYMOUS) opened as a file:
// /proc/PID/map_files of such a mapping gives an fd on its object, which
// the job can map again, shared or private. As a memfd it comes back.
constexpr std::string_view kAnonShmem = "/dev/zero (deleted)";
bool is_anon_shmem(const std::string& path) { return path == kAnonShmem; }
// A shared memory object restore makes as a memfd.
bool memfd_like(const std::string& path) { return is_memfd(path) || is_anon_shmem(path); }

std::string strip_deleted(std::string path) {
  if (is_deleted(path)) path.resize(path.size() - kDeleted.size());
  return path;
}

// "/proc/PID" (a process's directory, not one below it).
bool proc_pid_dir(const std::string& path) {
  return path.size() > 6 && path.starts_with("/proc/") &&
         path.find_first_not_of("0123456789", 6) == std::string::npos;
}

class GhostCollector {
 public:
  explicit GhostCollector(image::Checkpoint& ckpt) : ckpt_(ckpt) {}

  std::vector<PagedGhost> run() {
    find_mapped_shared();
    for (auto& p : ckpt_.processes) {
      if (p.zombie) continue;
      std::string proc = fmt::format("/proc/{}/", p.pid);
      for (auto& f : p.fds) {
        // Device nodes and symbolic links (an O_PATH fd) too: deleted, they
        // are refused here, where the job runs on, rather than by the
        // restore of an image that cannot bring them back.
        bool file_like = f.type == image::FdType::Regular || f.type == image::FdType::Directory ||
                         f.type == image::FdType::Fifo || f.type == image::FdType::CharDev ||
                         (f.type == image::FdType::Other && f.path.starts_with("/"));
        if (!file_like || !(is_deleted(f.path) || is_memfd(f.path))) continue;
        f.ghost = ghost(proc + "fd/" + std::to_string(f.fd),
                        fmt::format("pid {} fd {} ({})", p.pid, f.fd, f.path), f.path);
      }
      if (is_deleted(p.cwd))
        p.cwd_ghost = ghost(proc + "cwd", fmt::format("pid {} cwd ({})", p.pid, p.cwd), p.cwd);
      // An executable deleted (or rebuilt) while the job ran: /proc/PID/exe
      // still opens it (no capability needed, unlike map_files), so its
      // mappings below find it by device and inode.
      if (is_deleted(p.exe))
        p.exe_ghost = ghost(proc + "exe", fmt::format("pid {} exe ({})", p.pid, p.exe), p.exe);
    }
    // Mappings once every fd's file is known, in whichever process; the
    // private ones first, so that a shared mapping of a file only a private
    // mapping holds too maps the same ghost, whichever comes first.
    for (bool shared : {false, true})
      for (auto& p : ckpt_.processes)
        if (!p.zombie)
          for (auto& m : p.mappings)
            if (m.shared == shared) ghost_mapping(p, m);
    for (auto& p : ckpt_.processes)
      for (auto& f : p.fds)
        for (auto& w : f.inotify_watches) resolve_watch(p.pid, f.fd, w);
    return std::move(paged_);
  }

 private:
  // A mapping of a deleted file, a memfd or anonymous shared memory opened
  // as a file: the ghost it maps, where it has one.
  void ghost_mapping(const image::Process& p, image::Mapping& m) {
    const bool deleted_file = m.kind == image::MappingKind::File && is_deleted(m.path);
    if (!deleted_file && !memfd_like(m.path)) return;
    const bool held = ids_.count({m.dev, m.inode}) > 0;
    // A shared mapping of a deleted file or memfd no fd or private mapping
    // holds (an unlinked POSIX shared memory segment, anonymous shared
    // memory) stays what it was: shared memory, its pages in the page store
    // however large, made again as a memfd (of the same name for a memfd).
    if (m.shared && !held) return;
    // A file an fd holds too is known by the device and inode maps
    // shows; else map_files leads to it (which needs CAP_CHECKPOINT_RESTORE).
    if (auto it = ids_.find({m.dev, m.inode}); it != ids_.end()) {
      m.ghost = it->second;
    } else {
      std::string link = fmt::format("/proc/{}/map_files/{:x}-{:x}", p.pid, m.start, m.end);
      std::string who =
          fmt::format("pid {} mapping {:#x}-{:#x} ({})", p.pid, m.start, m.end, m.path);
      struct stat st {};
      if (::stat(link.c_str(), &st) != 0 && (errno == EPERM || errno == EACCES)) {
        // Private (a shared one no fd holds was left above): a memfd
        // mapping is saved as private memory then (all its pages), and
        // so is one of a deleted file, every page read through it.
        if (m.kind == image::MappingKind::File) {
          m.kind = image::MappingKind::Anonymous;
          m.all_pages = true;
        }
        return;
      }
      m.ghost = ghost(link, who, m.path);
    }
    // A private mapping of a memfd (or of anonymous shared memory) maps the
    // file: the pages it has not copied yet follow the file's, as after the
    // dump.
    if (!m.shared) m.kind = image::MappingKind::File;
  }

  // An inotify watch on a file no path leads to: on the ghost of the same
  // inode when an fd or mapping of the job holds it (the watch is added
  // again on the remade file), else refused.
  void resolve_watch(pid_t pid, int fd, image::InotifyWatch& w) {
    if (!w.path.empty() || w.ghost) return;
    auto it = ids_.find({w.dev, w.inode});
    if (it == ids_.end())
      throw Error(fmt::format("pid {} fd {} (inotify): watch {} is on a file (inode {}) snap "
                              "cannot find: {}, and no fd or mapping of the job holds it",
                              pid, fd, w.wd, w.inode, w.unfound),
                  "snap restores inotify watches on files it can find by path and on deleted "
                  "files the job keeps open; remove the watch (inotify_rm_watch) before the dump");
    w.ghost = it->second;
    w.unfound.clear();
  }

  // The ghost `link` (a /proc magic link) leads to, saved on first sight.
  uint64_t ghost(const std::string& link, const std::string& who, const std::string& shown) {
    struct stat st {};
    if (::stat(link.c_str(), &st) != 0) throw SysError("stat " + link + " for " + who, errno);
    auto key = std::make_pair(static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino));
    if (auto it = ids_.find(key); it != ids_.end()) return it->second;

    GhostFile g;
    g.id = ckpt_.ghost_files.size() + 1;
    fill_from_stat(st, g);
    if (memfd_like(shown) && S_ISREG(st.st_mode)) {
      g.kind = GhostFile::Kind::Memfd;
      // Anonymous shared memory gets the name restore gives such memory.
      g.path = is_anon_shmem(shown) ? std::string(image::kAnonShmemName)
                                    : strip_deleted(shown.substr(kMemfd.size()));
      g.nlink = 0;
    } else {
      g.path = strip_deleted(shown);
      g.kind = S_ISDIR(st.st_mode)    ? GhostFile::Kind::Directory
               : S_ISFIFO(st.st_mode) ? GhostFile::Kind::Fifo
                                      : GhostFile::Kind::File;
      if (!S_ISDIR(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISREG(st.st_mode))
        throw Error(who + " is a deleted " +
                        (S_ISLNK(st.st_mode)                           ? "symbolic link"
                         : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "device node"
                                                                        : "special file") +
                        ": nothing leads to it any more, and a restore could not make it again",
                    "snap restores deleted regular files, directories and FIFOs; close that fd, "
                    "or keep a link to the file, before the dump");
    }
    // A directory that was removed has no links; one still linked elsewhere
    // is reopened by its handle.
    if (g.kind == GhostFile::Kind::Directory) {
      g.nlink = 0;
      struct statfs fs {};
      if (::statfs(link.c_str(), &fs) == 0 && fs.f_type == PROC_SUPER_MAGIC) {
        if (!proc_pid_dir(g.path))
          throw Error(who + " is a directory of /proc that is gone",
                      "snap can only restore /proc/PID of a process that has ended");
        g.kind = GhostFile::Kind::ProcDir;
      }
    }
    if (g.nlink > 0) {
      save_handle(link, who, g);
    } else if (g.kind == GhostFile::Kind::File || g.kind == GhostFile::Kind::Memfd) {
      save_contents(link, who, g);
    }
    ckpt_.ghost_files.push_back(std::move(g));
    ids_[key] = ckpt_.ghost_files.back().id;
    return ckpt_.ghost_files.back().id;
  }

  void save_handle(const std::string& link, const std::string& who, GhostFile& g) {
    alignas(file_handle) unsigned char buf[sizeof(file_handle) + MAX_HANDLE_SZ] = {};
    auto* h = reinterpret_cast<file_handle*>(buf);
    h->handle_bytes = MAX_HANDLE_SZ;
    int mount_id = 0;
    if (::name_to_handle_at(AT_FDCWD, link.c_str(), h, &mount_id, AT_SYMLINK_FOLLOW) != 0)
      throw SysError(fmt::format("{}: the file was unlinked but {} other link(s) still lead to it, "
                                 "and its filesystem gives no handle to reopen it by "
                                 "(name_to_handle_at)",
                                 who, g.nlink),
                     errno, "snap cannot restore such a file faithfully");
    g.handle_type = h->handle_type;
    g.handle.assign(h->f_handle, h->f_handle + h->handle_bytes);
  }

  // Where the job maps deleted files and memfds shared: those pages are
  // read as shared memory (tracer/memory.h: write-protected, with a
  // leave-running dump, rather than read while the job is stopped), and a
  // restore writes them into the remade file; its contents are not read
  // there a second time.
  void find_mapped_shared() {
    for (const auto& p : ckpt_.processes)
      for (const auto& m : p.mappings)
        if (!p.zombie && m.shared && (is_deleted(m.path) || is_memfd(m.path)) &&
            mapping_has_content(m))
          mapped_[{m.dev, m.inode}].push_back({m.pgoff, m.pgoff + (m.end - m.start)});
  }

  // The parts of g's first `size` bytes that no shared mapping covers, in
  // order. All of it for a memfd sealed against writes: a restore may not
  // write into it once it is sealed again.
  std::vector<std::pair<uint64_t, uint64_t>> unmapped(const GhostFile& g) {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    auto it = mapped_.find({g.dev, g.inode});
    if (it == mapped_.end() || !image::filled_from_mappings(g)) return {{0, g.size}};
    auto covered = it->second;
    std::sort(covered.begin(), covered.end());
    uint64_t at = 0;
    for (const auto& [a, b] : covered) {
      if (a > at) out.push_back({at, std::min(a, g.size)});
      at = std::max(at, b);
      if (at >= g.size) break;
    }
    if (at < g.size) out.push_back({at, g.size});
    std::erase_if(out, [](const auto& r) { return r.first >= r.second; });
    return out;
  }

  // The data extents (SEEK_DATA / SEEK_HOLE: holes stay holes) outside the
  // ranges the job maps shared.
  void save_contents(const std::string& link, const std::string& who, GhostFile& g) {
    ScopedFd fd = open_for_reading(link);
    if (!fd) throw SysError("open " + link + " to save " + who, errno);
    struct statfs fs {};
    if (::fstatfs(fd.get(), &fs) == 0 && fs.f_type == HUGETLBFS_MAGIC)
      throw Error(who + " is a file in huge pages of the hugetlb pool (a hugetlbfs file or an "
                        "MFD_HUGETLB memfd) that no path leads to",
                  "snap saves hugetlb memory that only mappings hold, not such files; close it "
                  "(keeping its mappings) before the dump");
    if (g.kind == GhostFile::Kind::Memfd) {
      int seals = ::fcntl(fd.get(), F_GET_SEALS);
      if (seals > 0) g.seals = static_cast<uint32_t>(seals);
    }
    auto ranges = unmapped(g);
    uint64_t bytes = 0;
    for (const auto& [a, b] : ranges) bytes += b - a;
    // Larger ones to the page store, read once every ghost is known.
    if (bytes > kMaxInlineFileBytes || inline_ + bytes > kMaxInlineFilesBytes) {
      if (g.id > image::kMaxGhostPagesId || g.size >= image::kFilePagesSpan)
        throw Error(fmt::format("{}: {}", who, g.size >= image::kFilePagesSpan
                                                   ? "the file is too large for an image"
                                                   : "too many deleted files and memfds"),
                    "snap cannot save it");
      g.data_in_pages = true;
      PagedGhost paged{g.id, std::move(ranges), std::move(fd), who};
      if (::fstat(paged.fd.get(), &paged.collected) != 0) throw SysError("fstat of " + who, errno);
      paged.mapped_shared = mapped_.count({g.dev, g.inode}) > 0;
      paged_.push_back(std::move(paged));
      return;
    }
    inline_ += bytes;
    for (const auto& [from, to] : ranges)
      for (auto& e : read_data_extents(fd.get(), from, to, who)) g.data.push_back(std::move(e));
  }

  image::Checkpoint& ckpt_;
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> ids_;  // (dev, inode) -> ghost id
  uint64_t inline_ = 0;  // bytes of the files kept in the entries
  std::vector<PagedGhost> paged_;
  // (dev, inode) -> the byte ranges of the file the job maps shared
  std::map<std::pair<uint64_t, uint64_t>, std::vector<std::pair<uint64_t, uint64_t>>> mapped_;
};

}  // namespace

std::vector<PagedGhost> collect_ghost_files(image::Checkpoint& ckpt) {
  return GhostCollector(ckpt).run();
}

uint64_t store_ghost_pages(const std::vector<PagedGhost>& ghosts, const PageSink& sink) {
  uint64_t bytes = 0;
  for (const auto& g : ghosts)
    for (const auto& [from, to] : g.ranges) {
      std::string why;
      if (!read_file_pages(g.fd.get(), from, to, image::ghost_pages_start(g.id), sink, &why))
        throw Error(fmt::format("cannot save {}: {}", g.who, why));
      bytes += to - from;
    }
  return bytes;
}

bool quiet_for(const struct stat& st, int fd, std::chrono::seconds quiet) {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  if (to_ns(now) - to_ns(st.st_ctim) < std::chrono::nanoseconds(quiet).count())
    return false;
  struct statfs fs {};
  if (::fstatfs(fd, &fs) != 0) return false;
  switch (fs.f_type) {
    case TMPFS_MAGIC:
    case EXT4_SUPER_MAGIC:  // ext2 and ext3 share it
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC:
      return true;
    default:
      return false;
  }
}

int64_t settled_ctime(const struct stat& st) {
  timespec now {};
  ::clock_gettime(CLOCK_REALTIME, &now);
  const int64_t ctime = to_ns(st.st_ctim);
  return ctime <= to_ns(now) - image::kSettledNs ? ctime : 0;
}

bool same_as_before(const image::GhostFile& before, const image::GhostFile& now, int64_t ctime) {
  return before.ctime_ns && before.ctime_ns == ctime && before.kind == now.kind &&
         before.dev == now.dev && before.inode == now.inode && before.size == now.size &&
         before.mtime_ns == now.mtime_ns;
}

std::set<std::pair<uint64_t, uint64_t>> files_mapped_to_write(const image::Checkpoint& ckpt) {
  std::set<std::pair<uint64_t, uint64_t>> out;
  for (const auto& p : ckpt.processes)
    for (const auto& m : p.mappings)
      if (image::may_write_file(m)) out.insert({m.dev, m.inode});
  return out;
}

KeptBefore::KeptBefore(const image::Checkpoint* base, bool (*keeps)(const image::GhostFile&)) {
  if (!base) return;
  for (const auto& b : base->temp_files)
    if (b.kind == image::GhostFile::Kind::File && b.ctime_ns && keeps(b))
      entries_.emplace(b.path, &b);
  // A page the job had mapped writable then takes later writes without a
  // fault, so without a new ctime: such files are read again.
  mapped_written_ = files_mapped_to_write(*base);
}

const image::GhostFile* KeptBefore::same(
    const image::GhostFile& now, const struct stat& st,
    const std::set<std::pair<uint64_t, uint64_t>>& mapped_now) const {
  auto it = entries_.find(now.path);
  if (it == entries_.end() || mapped_written_.count({now.dev, now.inode}) ||
      mapped_now.count({now.dev, now.inode}))
    return nullptr;
  return same_as_before(*it->second, now, to_ns(st.st_ctim)) ? it->second : nullptr;
}

std::vector<EarlierPages> take_unchanged_ghosts(image::Checkpoint& ckpt,
                                                std::vector<PagedGhost>& ghosts,
                                                const image::Checkpoint* base) {
  std::map<uint64_t, image::GhostFile*> entries;  // id -> this checkpoint's entry
  for (auto& g : ckpt.ghost_files) entries[g.id] = &g;
  std::map<std::pair<uint64_t, uint64_t>, const image::GhostFile*> before;  // (dev, inode)
  if (base) {
    for (const auto& g : base->ghost_files)
      if (g.data_in_pages && g.ctime_ns) before[{g.dev, g.inode}] = &g;
    for (const auto& p : base->processes)  // then read in part only, as shared memory
      for (const auto& m : p.mappings)
        if (m.shared) before.erase({m.dev, m.inode});
  }
  std::vector<EarlierPages> out;
  std::erase_if(ghosts, [&](const PagedGhost& pg) {
    image::GhostFile& g = *entries.at(pg.id);
    const int64_t ctime = settled_ctime(pg.collected);
    if (pg.mapped_shared || !ctime) return false;
    g.ctime_ns = ctime;
    auto it = before.find({g.dev, g.inode});
    if (it == before.end() || !same_as_before(*it->second, g, ctime)) return false;
    const image::GhostFile& b = *it->second;
    const uint64_t start = image::ghost_pages_start(g.id);
    for (const auto& [from, to] : pg.ranges)
      out.push_back({start, start + from, image::ghost_pages_start(b.id) + from,
                     (to - from + image::kPageSize - 1) / image::kPageSize});
    return true;
  });
  return out;
}

std::vector<PagedGhost> take_quiet(std::vector<PagedGhost>& ghosts, std::chrono::seconds quiet) {
  std::vector<PagedGhost> out;
  std::erase_if(ghosts, [&](PagedGhost& g) {
    if (g.mapped_shared || !quiet_for(g.collected, g.fd.get(), quiet)) return false;
    out.push_back(std::move(g));
    return true;
  });
  return out;
}

void check_unchanged(const PagedGhost& g) {
  struct stat now {};
  if (::fstat(g.fd.get(), &now) != 0) throw SysError("fstat of " + g.who, errno);
  const auto& was = g.collected;
  if (to_ns(now.st_ctim) == to_ns(was.st_ctim) && to_ns(now.st_mtim) == to_ns(was.st_mtim) &&
      now.st_size == was.st_size)
    return;
  throw Error(fmt::format("{} changed while snap read it with the job running again (it had "
                          "not changed for a while before the dump, so snap read it after the "
                          "job's freeze): the checkpoint would not hold it as it was at the stop",
                          g.who),
              "dump again: a file changed that lately is read while the job is stopped");
}

void fill_from_stat(const struct stat& st, image::GhostFile& f) {
  f.mode = st.st_mode;
  f.uid = st.st_uid;
  f.gid = st.st_gid;
  f.size = static_cast<uint64_t>(st.st_size);
  f.atime_ns = to_ns(st.st_atim);
  f.mtime_ns = to_ns(st.st_mtim);
  f.nlink = st.st_nlink;
  f.dev = st.st_dev;
  f.inode = st.st_ino;
}

std::vector<image::GhostExtent> read_data_extents(int fd, uint64_t from, uint64_t to,
                                                  const std::string& who) {
  std::vector<image::GhostExtent> out;
  for_each_data_range(fd, from, to, [&](uint64_t start, uint64_t end) {
    image::GhostExtent e;
    e.offset = start;
    e.data.resize(end - start);
    for (size_t done = 0; done < e.data.size();) {
      ssize_t n = ::pread(fd, e.data.data() + done, e.data.size() - done,
                          static_cast<off_t>(start + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw SysError("read the contents of " + who, n < 0 ? errno : EIO);
      done += static_cast<size_t>(n);
    }
    out.push_back(std::move(e));
    return end;
  });
  return out;
}

}  // namespace snap
