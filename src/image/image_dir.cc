#include "image/image_dir.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <exception>
#include <filesystem>
#include <thread>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "image/file_io.h"
#include "image/format.h"

namespace snap::image {

namespace fs = std::filesystem;

namespace {

bool is_empty_dir(const std::string& dir) {
  std::error_code ec;
  bool empty = fs::is_empty(dir, ec);
  if (ec) throw SysError(fmt::format("read directory {}", dir), ec.value());
  return empty;
}

std::string parent_of(const std::string& dir) {
  fs::path p = fs::path(dir).parent_path();
  return p.empty() ? "." : p.string();
}

// The new image is in place by now: failing to delete the old one is
// worth a warning, not a failed dump.
void remove_tree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) warn("could not remove the previous image at {}: {}", path, ec.message());
}

std::exception_ptr sync_one(std::pair<ScopedFd, std::string>& f) {
  try {
    io::fsync_fd(f.first.get(), f.second);
    if (::close(f.first.release()) < 0) throw SysError(fmt::format("close({})", f.second), errno);
    return nullptr;
  } catch (...) {
    return std::current_exception();
  }
}

}  // namespace

std::string strip_slashes(std::string d) {
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return d;
}

void check_target(const std::string& dir, bool force) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) < 0) {
    if (errno == ENOENT) return;
    throw SysError(fmt::format("stat({})", dir), errno);
  }
  if (!S_ISDIR(st.st_mode))
    throw Error(fmt::format("{} exists and is not a directory", dir),
                "choose another image directory");
  if (is_empty_dir(dir)) return;
  if (!force)
    throw Error(fmt::format("{} exists and is not empty", dir),
                "choose another directory, or pass --force to replace the image there");
  if (::access((dir + "/" + disk::kManifestFile).c_str(), F_OK) < 0)
    throw Error(fmt::format("{} is not empty and does not hold a snap image; not replacing it",
                            dir),
                "--force only replaces a previous image; choose another directory");
}

void install_image(const std::string& tmp, const std::string& dir, bool force) {
  check_target(dir, force);
  if (::rename(tmp.c_str(), dir.c_str()) == 0) {
    // DIR did not exist or was an empty directory.
  } else if (errno != ENOTEMPTY && errno != EEXIST) {
    throw SysError(fmt::format("rename({}, {})", tmp, dir), errno);
  } else if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    // The previous image now sits at tmp.
    remove_tree(tmp);
  } else if (errno == EINVAL || errno == ENOSYS) {
    // No RENAME_EXCHANGE on this filesystem: move the old image aside.
    std::string old = dir + ".snap-old-XXXXXX";
    if (!::mkdtemp(old.data())) throw SysError(fmt::format("mkdtemp({})", old), errno);
    if (::rename(dir.c_str(), old.c_str()) < 0) {
      int err = errno;
      ::rmdir(old.c_str());
      throw SysError(fmt::format("rename({}, {})", dir, old), err);
    }
    if (::rename(tmp.c_str(), dir.c_str()) < 0) {
      int err = errno;
      ::rename(old.c_str(), dir.c_str());
      throw SysError(fmt::format("rename({}, {})", tmp, dir), err);
    }
    remove_tree(old);
  } else {
    throw SysError(fmt::format("renameat2({}, {}, RENAME_EXCHANGE)", tmp, dir), errno);
  }
  io::fsync_dir(parent_of(dir));
}

ScopedFd write_unsynced(const std::string& path, const void* data, size_t len) {
  ScopedFd fd = io::open_file(path, O_WRONLY | O_CREAT | O_EXCL);
  io::write_all(fd.get(), data, len, path);
  return fd;
}

void SyncAll::wait() {
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(files_.size());
  for (size_t i = 1; i < files_.size(); i++)
    threads.emplace_back([&, i] { errors[i] = sync_one(files_[i]); });
  if (!files_.empty()) errors[0] = sync_one(files_[0]);
  for (auto& t : threads) t.join();
  files_.clear();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace snap::image
