#include "tracer/temp_files.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <set>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"
#include "tracer/ghost_files.h"

namespace snap {

namespace {

using image::GhostFile;

const char* const kFixedRoots[] = {"/tmp", "/var/tmp", "/dev/shm"};

bool is_fixed_root(const std::string& d) {
  return std::find(std::begin(kFixedRoots), std::end(kFixedRoots), d) != std::end(kFixedRoots);
}

// "/a/b/" -> "/a/b"; empty for a relative or empty path.
std::string clean_dir(std::string d) {
  if (d.empty() || d[0] != '/') return {};
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return d;
}

// Only a regular file's size means anything here.
void stat_into(const struct stat& st, GhostFile& f) {
  fill_from_stat(st, f);
  if (!S_ISREG(st.st_mode)) f.size = 0;
}

class TempCollector {
 public:
  TempCollector(image::Checkpoint& ckpt, const std::vector<std::string>& roots,
                TempFileContents& contents, uint64_t pages_max, const FileViews& views,
                const image::Checkpoint* base)
      : ckpt_(ckpt), roots_(roots), contents_(contents), views_(views),
        before_(base, [](const GhostFile& b) { return b.data_in_pages; }), pages_max_(pages_max) {}

  void run() {
    mapped_written_ = files_mapped_to_write(ckpt_);
    for (const auto& p : ckpt_.processes) {
      for (const auto& m : p.mappings) {
        if (m.named_shm) shm_paths_.insert(m.path);  // remade from the page store
        // Written through a mapping: no watch would see it change.
        else if (image::may_write_file(m)) written_maps_.insert(m.path);
      }
      // An open by snap would break the job's lease on the file (and wait
      // for the stopped job to give it up): such a file is not read.
      for (const auto& f : p.fds)
        if (std::any_of(f.locks.begin(), f.locks.end(),
                        [](const image::FileLock& l) { return l.kind == image::LockKind::Lease; }))
          leased_paths_.insert(f.path);
    }
    for (const auto& p : ckpt_.processes) {
      if (p.zombie) continue;
      for (const auto& f : p.fds) fd(p.pid, f);
      for (const auto& m : p.mappings)
        if (m.named_shm) chain(p.pid, parent_of(m.path));
        else mapped(p.pid, m);
      if (auto cwd = clean_dir(p.cwd); !cwd.empty()) chain(p.pid, cwd);
    }
    uint64_t id = 0;
    for (auto& [path, f] : files_) {
      f.id = ++id;
      if (auto it = as_in_base_.find(path); it != as_in_base_.end())
        contents_.refer(f.id, it->second, f.size);
      ckpt_.temp_files.push_back(std::move(f));
    }
  }

 private:
  void fd(pid_t pid, const image::FileDesc& f) {
    if (f.ghost || f.path.ends_with(" (deleted)")) return;
    if (f.unix_socket) {
      if (f.unix_socket->name.starts_with("/")) chain(pid, parent_of(f.unix_socket->name));
      return;
    }
    if (f.type != image::FdType::Regular && f.type != image::FdType::Fifo &&
        f.type != image::FdType::Directory)
      return;
    // A job may hold one file open thousands of times: looked at once.
    if (!seen_.insert(f.path).second) return;
    if (temp_root_of(f.path, roots_).empty() || shm_paths_.count(f.path)) return;
    chain(pid, parent_of(f.path));
    const std::string who = fmt::format("pid {} fd {} ({})", pid, f.fd, f.path);
    const std::string link = fmt::format("/proc/{}/fd/{}", pid, f.fd);
    struct stat st {};
    if (::stat(link.c_str(), &st) != 0) return;
    GhostFile t;
    t.path = f.path;
    stat_into(st, t);
    if (S_ISDIR(st.st_mode)) {
      t.kind = GhostFile::Kind::Directory;
    } else if (S_ISFIFO(st.st_mode)) {
      t.kind = GhostFile::Kind::Fifo;
    } else if (S_ISREG(st.st_mode)) {
      regular(std::move(t), st, who, [&] { return open_for_reading(link); });
      return;
    } else {
      return;
    }
    files_.emplace(t.path, std::move(t));
  }

  // A file mapping of a process: a file in a temporary directory it maps
  // and does not write through the mapping (a joblib array in /dev/shm, a
  // library compiled into /tmp, data mapped copy-on-write), kept as a file
  // it holds open is, so that the mapping finds it again on another node.
  // Opened by its path, and kept only where that still leads to the mapped
  // file.
  void mapped(pid_t pid, const image::Mapping& m) {
    if (m.kind != image::MappingKind::File || m.named_shm || m.ghost ||
        m.path.ends_with(" (deleted)") || image::may_write_file(m))
      return;
    if (!seen_.insert(m.path).second) return;
    if (temp_root_of(m.path, roots_).empty() || shm_paths_.count(m.path)) return;
    const std::string who = fmt::format("pid {} mapping {:#x} ({})", pid, m.start, m.path);
    ScopedFd in = open_for_reading(views_.path(pid, m.path), O_NOFOLLOW);
    struct stat st {};
    if (!in || ::fstat(in.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
        static_cast<uint64_t>(st.st_dev) != m.dev || static_cast<uint64_t>(st.st_ino) != m.inode) {
      vlog("{}: not the mapped file at that path now: a restore maps it by its path", who);
      return;
    }
    chain(pid, parent_of(m.path));
    GhostFile t;
    t.path = m.path;
    stat_into(st, t);
    regular(std::move(t), st, who, [&] { return std::move(in); });
  }

  // A regular file `t` (stat filled in from `st`), which `open` opens for
  // reading (called only once a lease does not forbid it): its contents
  // kept in the checkpoint (up to kMaxInlineFileBytes), or left to the page
  // store (contents_; in a series, where the checkpoint before kept it as
  // it still is, referred to there, not read), or, where neither can be,
  // not kept (said).
  void regular(GhostFile t, const struct stat& st, const std::string& who,
               const std::function<ScopedFd()>& open) {
    t.kind = GhostFile::Kind::File;
    if (t.size > kMaxInlineFileBytes || total_ + t.size > kMaxInlineFilesBytes) {
      // Node-local scratch or data staged there: a restore on another
      // node, or after the directory is cleaned, would refuse without
      // it. Its contents go to the page store, read later
      // (tracer/temp_file_contents.h); what cannot is said at each dump,
      // so that it is known before it is needed.
      std::string why;
      if (leased_paths_.count(t.path))
        why = "the job holds a lease on it, which reading it would break";
      else if (written_maps_.count(t.path))
        why = "the job writes it through a shared mapping";
      else if (pages_total_ + t.size > pages_max_)
        why = fmt::format("more than the {:.1f} GiB of such files a dump keeps: --temp-files-max",
                          static_cast<double>(pages_max_) / (1 << 30));
      // In a series, one as the checkpoint before kept it is not read.
      else if (t.ctime_ns = settled_ctime(st);
               const GhostFile* b = before_.same(t, st, mapped_written_))
        t.data_in_pages = as_in_base_.emplace(t.path, b->id).second;
      else if (ScopedFd in = open(); !in)
        why = fmt::format("cannot open it: {}", std::strerror(errno));
      else if (contents_.add(t.path, std::move(in), t.size, &why))
        t.data_in_pages = true;
      if (!t.data_in_pages) {
        warn("{}: {:.1f} MiB in a temporary directory, not kept in the image ({}): a restore "
             "needs the file at that path (where it is gone, on another node or after a "
             "cleanup, the restore refuses before the job runs; copy it back first)",
             who, static_cast<double>(t.size) / (1 << 20), why);
        return;
      }
      vlog("{}: {:.1f} MiB in a temporary directory: its contents go to the page store{}", who,
           static_cast<double>(t.size) / (1 << 20),
           as_in_base_.count(t.path) ? " (as the checkpoint before kept them, not read again)"
                                     : "");
      pages_total_ += t.size;
      files_.emplace(t.path, std::move(t));
      return;
    }
    if (leased_paths_.count(t.path)) {
      vlog("{}: the job holds a lease on it, which reading it would break: a restore reopens "
           "it by its path",
           who);
      return;
    }
    ScopedFd in = open();
    if (!in) {
      vlog("{}: cannot read it ({}): a restore reopens it by its path", who, std::strerror(errno));
      return;
    }
    t.data = read_data_extents(in.get(), 0, t.size, who);
    total_ += t.size;
    files_.emplace(t.path, std::move(t));
  }

  // `dir` and every directory above it up to the outermost temporary
  // directory it is in (that one too where it is a $TMPDIR of its own), as
  // process `pid` sees them.
  void chain(pid_t pid, const std::string& dir) {
    const std::string root = temp_root_of(dir, roots_);
    if (root.empty()) {
      if (std::count(roots_.begin(), roots_.end(), dir) && !is_fixed_root(dir)) directory(pid, dir);
      return;
    }
    for (std::string d = dir; d.size() > root.size(); d = parent_of(d))
      if (!directory(pid, d)) return;  // there already, with what leads to it
    if (!is_fixed_root(root)) directory(pid, root);
  }

  // Records directory d; false when it was recorded before.
  bool directory(pid_t pid, const std::string& d) {
    if (files_.count(d)) return false;
    struct stat st {};
    if (::lstat(views_.path(pid, d).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return true;
    GhostFile t;
    t.kind = GhostFile::Kind::Directory;
    t.path = d;
    stat_into(st, t);
    files_.emplace(d, std::move(t));
    return true;
  }

  image::Checkpoint& ckpt_;
  const std::vector<std::string>& roots_;
  TempFileContents& contents_;
  const FileViews& views_;
  std::set<std::string> shm_paths_, written_maps_, leased_paths_, seen_;
  // A series: what the checkpoint before kept of larger files in the page
  // store; the files this one maps to write through, by (dev, inode); the
  // paths of the files as it kept them, with its ids.
  KeptBefore before_;
  std::set<std::pair<uint64_t, uint64_t>> mapped_written_;
  std::map<std::string, uint64_t> as_in_base_;
  std::map<std::string, GhostFile> files_;  // by path: a directory before what it holds
  uint64_t total_ = 0;  // of the contents kept in the checkpoint
  const uint64_t pages_max_;
  uint64_t pages_total_ = 0;  // of those left to the page store
};

}  // namespace

std::vector<std::string> temp_roots(const image::Checkpoint& ckpt) {
  std::vector<std::string> roots(std::begin(kFixedRoots), std::end(kFixedRoots));
  for (const auto& p : ckpt.processes) {
    if (p.zombie) continue;
    std::ifstream in(fmt::format("/proc/{}/environ", p.pid), std::ios::binary);
    std::string var;
    while (std::getline(in, var, '\0'))
      if (var.starts_with("TMPDIR=")) {
        std::string d = clean_dir(var.substr(7));
        if (d.size() > 1 && std::find(roots.begin(), roots.end(), d) == roots.end())
          roots.push_back(d);
      }
  }
  return roots;
}

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

std::string temp_root_of(const std::string& path, const std::vector<std::string>& roots) {
  std::string best;
  for (const auto& r : roots)
    if (path.size() > r.size() + 1 && path.starts_with(r) && path[r.size()] == '/' &&
        (best.empty() || r.size() < best.size()))
      best = r;
  return best;
}

TempFileContents collect_temp_files(image::Checkpoint& ckpt, const std::vector<std::string>& roots,
                                    uint64_t pages_max, const FileViews& views,
                                    const image::Checkpoint* base) {
  TempFileContents contents;
  TempCollector(ckpt, roots, contents, pages_max, views, base).run();
  return contents;
}

}  // namespace snap
