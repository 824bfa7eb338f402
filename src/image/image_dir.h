// Where an image is written: the directory it is to replace, the files
// written into its temporary directory and fsynced together, and the move
// into place (see "Committing" in FORMAT.md).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "base/scoped_fd.h"

namespace snap::image {

// `d` without trailing slashes ("/" stays).
std::string strip_slashes(std::string d);

// Refuses what must not be replaced at `dir`: anything but nothing, an
// empty directory or, with `force`, a snap image.
void check_target(const std::string& dir, bool force);

// Moves the finished image from `tmp` to `dir` (nothing there, an empty
// directory, or with `force` a previous image, which is removed after),
// then fsyncs `dir`'s parent.
void install_image(const std::string& tmp, const std::string& dir, bool force);

// Writes a whole new file without fsyncing it (SyncAll does, with the others).
ScopedFd write_unsynced(const std::string& path, const void* data, size_t len);
template <typename Bytes>
ScopedFd write_unsynced(const std::string& path, const Bytes& b) {
  return write_unsynced(path, b.data(), b.size());
}

// The files of an image, fsynced together once all are written: each on a
// thread of its own, so that their device flushes overlap (the block layer
// merges flushes that wait at the same time) instead of queueing one after
// the other.
class SyncAll {
 public:
  void add(ScopedFd fd, std::string path) { files_.emplace_back(std::move(fd), std::move(path)); }
  // fsyncs and closes every file added since the last wait(); throws the
  // first failure.
  void wait();

 private:
  std::vector<std::pair<ScopedFd, std::string>> files_;
};

}  // namespace snap::image
