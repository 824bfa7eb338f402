// Files the user names to go with each checkpoint (dump --with-files
// DIR): the job's working files that it writes and reads again as it runs
// (Quantum ESPRESSO's outdir, which its molecular dynamics reads back at
// every step; a restart file; a log it appends to and parses). Restored
// to a checkpoint, a job must find them as they were at that checkpoint,
// not as it left them later; snap cannot tell which closed files a job
// will read again, so the user names them.
//
// Each regular file and directory under such a path is read while the job
// is stopped, into Checkpoint::temp_files (image::GhostFile::put_back), and
// a restore puts each back as it was (restore/ghosts.h).
#pragma once

#include <cstdint>
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
};

struct KeptFiles {
  std::vector<KeptFilePages> pages;  // for store_kept_files, while the job is stopped
  size_t files = 0, directories = 0;
  uint64_t bytes = 0;
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
KeptFiles collect_kept_files(image::Checkpoint& ckpt, const std::vector<std::string>& paths);

// Reads the contents of `kept.pages` into `sink` as pages of pid
// image::kFilePagesPid, mapping image::file_pages_start(id). The job must
// still be stopped. Throws Error naming the file where a read fails.
uint64_t store_kept_files(const KeptFiles& kept, const PageSink& sink);

}  // namespace snap
