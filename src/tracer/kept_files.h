// Files the user names to go with each checkpoint (dump --with-files
// DIR): the job's working files that it writes and reads again as it runs
// (Quantum ESPRESSO's outdir, which its molecular dynamics reads back at
// every step; a restart file; a log it appends to and parses). Restored
// to a checkpoint, a job must find them as they were at that checkpoint,
// not as it left them later; snap cannot tell which closed files a job
// will read again, so the user names them.
//
// Each regular file and directory under such a path is read as it is at
// the stop (while the job is stopped, or, a larger file nothing changed for
// a while, after, checked unchanged) into Checkpoint::temp_files
// (image::GhostFile::put_back), and a restore puts each back as it was
// (restore/ghosts.h).
#pragma once

#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"
#include "tracer/memory.h"

namespace snap {

// A kept file whose contents go to the page store (larger than what the
// checkpoint's JSON holds): its entry's id and an fd on it.
struct KeptFilePages {
  uint64_t id = 0;
  uint64_t size = 0;
  ScopedFd fd;
  std::string path;
  struct stat collected {};  // at the stop
  // Nothing changed it for a while before the stop (ghost_files.h
  // quiet_for), and the job does not map it to write through: read once
  // the job runs again, off its freeze, and checked unchanged then.
  bool quiet = false;
  // Not 0: the file is as the previous checkpoint of the series kept it
  // under this id (image::GhostFile::ctime_ns): its pages refer to those,
  // nothing is read.
  uint64_t base_id = 0;
};

struct KeptFiles {
  std::vector<KeptFilePages> pages;  // for store_kept_files
  size_t files = 0, directories = 0;
  uint64_t bytes = 0;
  // Of those, the files as the previous checkpoint kept them, not read.
  size_t unchanged = 0;
  uint64_t unchanged_bytes = 0;
};

// Adds every directory and regular file under each of `paths` (absolute; a
// path may be a single file) to ckpt.temp_files with put_back set (an entry
// there already gets it set), kept sorted by path; small files' contents
// in the entry, larger ones' left to store_kept_files. A named path that
// is a symbolic link means where it leads; links and other kinds of file
// under it are left out (said with -v). A named path that is not there
// (not made yet) keeps nothing, with a warning. Throws Error naming the
// path where one cannot be read: a checkpoint without it would not restore
// faithfully.
// `quiet`: how long a larger file must have been left unchanged to be read
// after the stop (none with nullopt: a --kill dump, whose job stays
// stopped).
// `base`: the previous checkpoint of a series, or nullptr: a file it kept
// that is still the same (the same dev, inode, size, modification time and
// the status change time it recorded, image::GhostFile::ctime_ns) is not
// read again: a small one's contents are copied from its entry, a larger
// one's pages refer to the base's (earlier_kept_files).
KeptFiles collect_kept_files(image::Checkpoint& ckpt, const std::vector<std::string>& paths,
                             std::optional<std::chrono::seconds> quiet,
                             const image::Checkpoint* base = nullptr);

// The pages of each file of `kept.pages` that is as the base kept it
// (base_id): those the base stored for it.
std::vector<EarlierPages> earlier_kept_files(const KeptFiles& kept);

// Reads the contents of the files of `kept.pages` that are `quiet` (or
// not) into `sink` as pages of pid image::kFilePagesPid, mapping
// image::file_pages_start(id): the others while the job is still stopped,
// the quiet ones once it runs again, each checked unchanged (its
// modification time and size; a rename over its path leaves what snap read
// through its fd as it was) after it is read. Throws Error naming the file
// where a read fails or a quiet file changed (the checkpoint would not hold
// it as it was at the stop). Returns the bytes read.
uint64_t store_kept_files(const KeptFiles& kept, const PageSink& sink, bool quiet);

}  // namespace snap
