#include "tracer/kept_files.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "tracer/file_pages.h"
#include "tracer/ghost_files.h"

namespace snap {

namespace {

namespace fs = std::filesystem;
using image::GhostFile;

std::string hint() {
  return "--with-files names the directories and files the job writes and reads again; snap "
         "must be able to read all of them at every checkpoint";
}

class KeptCollector {
 public:
  KeptCollector(image::Checkpoint& ckpt, std::optional<std::chrono::seconds> quiet,
                const image::Checkpoint* base)
      : ckpt_(ckpt), quiet_(quiet),
        before_(base, [](const GhostFile& b) { return b.put_back; }) {
    for (auto& t : ckpt_.temp_files) {
      next_id_ = std::max(next_id_, t.id + 1);
      by_path_.emplace(t.path, &t);
    }
    // Files the job may write through a mapping: no time of theirs tells.
    mapped_written_ = files_mapped_to_write(ckpt_);
  }

  void path(const std::string& named) {
    // A named path that is a symbolic link (an outdir linked to scratch)
    // means where it leads; links below it are left as they are.
    std::error_code ec;
    const std::string root = fs::canonical(named, ec).string();
    if (ec == std::errc::no_such_file_or_directory) {
      // Not made yet (the job makes its outdir as it starts), or gone: a
      // checkpoint of a job without it has nothing of it to keep, and must
      // not fail for it (the one before a Slurm time limit least of all).
      warn("--with-files {}: not there at this checkpoint; nothing of it kept", named);
      return;
    }
    if (ec) throw Error(fmt::format("--with-files {}: {}", named, ec.message()), hint());
    struct stat st {};
    if (::lstat(root.c_str(), &st) != 0)
      throw SysError(fmt::format("--with-files {}: lstat", root), errno, hint());
    entry(root);
    if (!S_ISDIR(st.st_mode)) return;
    fs::recursive_directory_iterator it(root, fs::directory_options::none, ec), end;
    for (; !ec && it != end; it.increment(ec)) entry(it->path().string());
    if (ec)
      throw Error(fmt::format("--with-files {}: listing it: {}", root, ec.message()), hint());
  }

  KeptFiles finish() {
    // The new entries among the old, sorted by path: a directory before
    // what it holds.
    for (auto& g : added_) ckpt_.temp_files.push_back(std::move(g));
    std::sort(ckpt_.temp_files.begin(), ckpt_.temp_files.end(),
              [](const GhostFile& a, const GhostFile& b) { return a.path < b.path; });
    return std::move(out_);
  }

 private:
  void entry(const std::string& path) {
    if (!seen_.insert(path).second) return;  // named twice, or inside another named path
    if (auto it = by_path_.find(path); it != by_path_.end()) {
      // Already held as a file of a temporary directory the job holds.
      it->second->put_back = true;
      count(*it->second);
      return;
    }
    const std::string who = fmt::format("--with-files: {}", path);
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) throw SysError(who + ": lstat", errno, hint());
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
      vlog("{}: not a regular file or directory (a symbolic link, FIFO, socket): left as a "
           "restore finds it", who);
      return;
    }
    if (next_id_ > image::kMaxFilePagesId)
      throw Error(fmt::format("{}: more files than an image holds ({})", who, image::kMaxFilePagesId),
                  hint());
    GhostFile g;
    g.id = next_id_++;
    g.path = path;
    g.put_back = true;
    if (S_ISDIR(st.st_mode)) {
      fill_from_stat(st, g);
      g.kind = GhostFile::Kind::Directory;
      g.size = 0;
    } else {
      ScopedFd in = open_for_reading(path, O_NOFOLLOW);
      if (!in) throw SysError(who + ": open", errno, hint());
      if (::fstat(in.get(), &st) != 0) throw SysError(who + ": fstat", errno, hint());
      fill_from_stat(st, g);
      g.kind = GhostFile::Kind::File;
      g.ctime_ns = settled_ctime(st);
      const GhostFile* same = before_.same(g, st, mapped_written_);
      if (g.size <= kMaxInlineFileBytes && inline_ + g.size <= kMaxInlineFilesBytes) {
        if (same && !same->data_in_pages) {
          g.data = same->data;
          unchanged(g);
        } else {
          g.data = read_data_extents(in.get(), 0, g.size, who);
        }
        inline_ += g.size;
      } else {
        if (g.size >= image::kFilePagesSpan)
          throw Error(fmt::format("{}: {} bytes, too large for an image", who, g.size), hint());
        g.data_in_pages = true;
        const bool quiet = quiet_ && !mapped_written_.count({g.dev, g.inode}) &&
                           quiet_for(st, in.get(), *quiet_);
        const uint64_t base_id = same && same->data_in_pages ? same->id : 0;
        if (base_id) unchanged(g);
        out_.pages.push_back({g.id, g.size, std::move(in), path, st, quiet && !base_id, base_id});
      }
    }
    count(g);
    added_.push_back(std::move(g));
  }

  void unchanged(const GhostFile& g) {
    out_.unchanged++;
    out_.unchanged_bytes += g.size;
  }

  void count(const GhostFile& g) {
    if (g.kind == GhostFile::Kind::Directory) {
      out_.directories++;
    } else {
      out_.files++;
      out_.bytes += g.size;
    }
  }

  image::Checkpoint& ckpt_;
  std::optional<std::chrono::seconds> quiet_;
  // What the base checkpoint kept of the named files (put_back entries).
  KeptBefore before_;
  // (dev, inode) of files the job may write through a mapping
  std::set<std::pair<uint64_t, uint64_t>> mapped_written_;
  uint64_t next_id_ = 1;
  uint64_t inline_ = 0;
  std::map<std::string, GhostFile*> by_path_;
  std::set<std::string> seen_;
  std::vector<GhostFile> added_;
  KeptFiles out_;
};

}  // namespace

KeptFiles collect_kept_files(image::Checkpoint& ckpt, const std::vector<std::string>& paths,
                             std::optional<std::chrono::seconds> quiet,
                             const image::Checkpoint* base) {
  KeptCollector c(ckpt, quiet, base);
  for (const auto& p : paths) c.path(p);
  return c.finish();
}

std::vector<EarlierPages> earlier_kept_files(const KeptFiles& kept) {
  std::vector<EarlierPages> out;
  for (const auto& k : kept.pages)
    if (k.base_id) out.push_back(file_as_before(k.id, k.base_id, k.size));
  return out;
}

uint64_t store_kept_files(const KeptFiles& kept, const PageSink& sink, bool quiet) {
  uint64_t bytes = 0;
  for (const auto& k : kept.pages) {
    if (k.quiet != quiet || k.base_id) continue;
    std::string why;
    if (!read_file_pages(k.fd.get(), 0, k.size, image::file_pages_start(k.id), sink, &why))
      throw Error(fmt::format("--with-files: cannot save {}: {}", k.path, why), hint());
    bytes += k.size;
    if (!quiet) continue;
    struct stat now {};
    if (::fstat(k.fd.get(), &now) != 0)
      throw SysError(fmt::format("--with-files: {}: fstat", k.path), errno);
    if (now.st_size != k.collected.st_size || now.st_mtim.tv_sec != k.collected.st_mtim.tv_sec ||
        now.st_mtim.tv_nsec != k.collected.st_mtim.tv_nsec)
      throw Error(fmt::format("--with-files: {} changed while snap read it with the job running "
                              "again (it had not changed for a while before the stop, so snap "
                              "read it after the freeze): the checkpoint would not hold it as it "
                              "was at the stop",
                              k.path),
                  "checkpoint again: a file changed that lately is read while the job is stopped");
  }
  return bytes;
}

}  // namespace snap
