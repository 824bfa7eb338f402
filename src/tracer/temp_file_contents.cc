#include "tracer/temp_file_contents.h"

#include <fcntl.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "tracer/file_pages.h"

namespace snap {

namespace {

using image::kPageSize;

// What says a watched file is no longer as it was at the stop: a write
// (also truncate, fallocate, copy_file_range into it), or the watch ending
// (its inode gone; snap's own fd should keep it, but later writes would
// not show). Its removal alone changes nothing snap reads through that fd.
constexpr uint32_t kChangeMask = IN_MODIFY | IN_DELETE_SELF;

}  // namespace

bool TempFileContents::add(const std::string& path, ScopedFd fd, uint64_t size, std::string* why) {
  if (size >= image::kFilePagesSpan) {
    *why = "too large for the page store";
    return false;
  }
  if (!inotify_) {
    inotify_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!inotify_) {
      *why = fmt::format("inotify_init1: {}", std::strerror(errno));
      return false;
    }
  }
  // Watched through snap's own fd: the same inode, whatever its path now.
  const std::string own = fmt::format("/proc/self/fd/{}", fd.get());
  const int watch = ::inotify_add_watch(inotify_.get(), own.c_str(), kChangeMask);
  if (watch < 0) {
    *why = fmt::format("cannot watch it for changes (inotify_add_watch: {})", std::strerror(errno));
    return false;
  }
  files_.push_back({path, size, std::move(fd), watch});
  return true;
}

void TempFileContents::refer(uint64_t id, uint64_t base_id, uint64_t size) {
  earlier_.push_back(file_as_before(id, base_id, size));
  earlier_bytes_ += size;
}

std::vector<bool> TempFileContents::changed() const {
  std::vector<bool> out(files_.size(), false);
  // Two paths to one inode (hard links) share a watch.
  std::multimap<int, size_t> by_watch;
  for (size_t i = 0; i < files_.size(); i++) by_watch.emplace(files_[i].watch, i);
  alignas(inotify_event) char buf[64 << 10];
  for (;;) {
    ssize_t n = ::read(inotify_.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EAGAIN: no more events
    for (ssize_t at = 0; at < n;) {
      const auto* e = reinterpret_cast<const inotify_event*>(buf + at);
      at += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
      if (e->mask & IN_Q_OVERFLOW) return std::vector<bool>(files_.size(), true);
      for (auto [it, end] = by_watch.equal_range(e->wd); it != end; ++it) out[it->second] = true;
    }
  }
  return out;
}

uint64_t TempFileContents::store(image::Checkpoint& ckpt, const PageSink& sink,
                                 const std::function<void(uint64_t)>& forget) {
  std::map<std::string, const image::GhostFile*> entries;
  for (auto& t : ckpt.temp_files)
    if (t.data_in_pages) entries[t.path] = &t;
  std::vector<std::string> failed(files_.size());
  for (size_t i = 0; i < files_.size(); i++) {
    const image::GhostFile* t = entries.at(files_[i].path);
    if (t->id > image::kMaxFilePagesId) {  // beyond what the page store's keys allow
      failed[i] = "too many files in temporary directories";
      continue;
    }
    if (!read_file_pages(files_[i].fd.get(), 0, files_[i].size, image::file_pages_start(t->id), sink,
                         &failed[i]) && failed[i].empty())
      failed[i] = "reading it failed";
  }
  const std::vector<bool> changes = changed();
  uint64_t kept = 0;
  std::set<std::string> dropped;
  for (size_t i = 0; i < files_.size(); i++) {
    const image::GhostFile* t = entries.at(files_[i].path);
    if (changes[i] && failed[i].empty()) failed[i] = "it changed while the image was written";
    if (failed[i].empty()) {
      kept += files_[i].size;
      continue;
    }
    // Not made again at restore, not even empty: reopened by its path.
    forget(image::file_pages_start(t->id));
    dropped.insert(t->path);
    warn("{}: {:.1f} MiB in a temporary directory, not kept in the image ({}): a restore needs "
         "the file at that path (where it is gone, on another node or after a cleanup, the "
         "restore refuses before the job runs; copy it back first)",
         files_[i].path, static_cast<double>(files_[i].size) / (1 << 20), failed[i]);
  }
  std::erase_if(ckpt.temp_files, [&](const image::GhostFile& t) {
    return t.data_in_pages && dropped.count(t.path);
  });
  return kept;
}

}  // namespace snap
