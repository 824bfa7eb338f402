// The contents of the job's larger files in temporary directories (a
// scratch file of many MiB in $TMPDIR, data staged in /tmp): too big for the
// checkpoint's JSON (tracer/temp_files.h), they go to the page store,
// deduplicated and compressed like memory (image::GhostFile::data_in_pages).
//
// Each file is opened by snap while the job is stopped, and watched
// (inotify) from then on; its contents are read later (once the job runs
// again, with a leave-running dump), and kept only if nothing wrote to it
// in between: what the image holds is the file as it was at the stop, or
// nothing (then, as before, a restore needs the file at its path, and the
// dump says so).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"
#include "tracer/memory.h"

namespace snap {

class TempFileContents {
 public:
  TempFileContents() = default;
  TempFileContents(TempFileContents&&) noexcept = default;
  TempFileContents& operator=(TempFileContents&&) noexcept = default;

  // While the job is stopped: keeps `fd`, open for reading on the file at
  // `path`, and starts watching the file. False, with why in *why, where it
  // cannot be watched; the file is then not carried.
  bool add(const std::string& path, ScopedFd fd, uint64_t size, std::string* why);

  // Reads every added file, in whole pages (the last one padded with zeros,
  // holes skipped), into `sink` as pages of pid image::kFilePagesPid,
  // mapping image::file_pages_start(id), the id being that of its entry in
  // ckpt.temp_files (found by path; each must have one, data_in_pages set).
  // Then, for each file written to or truncated since it was added (or
  // whose watch ended, or one the read failed on), calls forget(mapping
  // start), removes its
  // entry from ckpt.temp_files and warns, naming it: a restore needs it at
  // its path, as any file. Returns the bytes kept.
  uint64_t store(image::Checkpoint& ckpt, const PageSink& sink,
                 const std::function<void(uint64_t mapping_start)>& forget);

  bool empty() const { return files_.empty(); }

  // A series: a file that is as the checkpoint before kept it (its entry
  // `id` of `size` bytes, the base's `base_id`): not read, its pages those
  // the base stored (earlier()).
  void refer(uint64_t id, uint64_t base_id, uint64_t size);
  const std::vector<EarlierPages>& earlier() const { return earlier_; }
  uint64_t earlier_bytes() const { return earlier_bytes_; }

 private:
  struct File {
    std::string path;
    uint64_t size = 0;
    ScopedFd fd;
    int watch = -1;
  };
  // The watches that saw a change (all of them after a queue overflow).
  std::vector<bool> changed() const;

  ScopedFd inotify_;
  std::vector<File> files_;
  std::vector<EarlierPages> earlier_;
  uint64_t earlier_bytes_ = 0;
};

}  // namespace snap
