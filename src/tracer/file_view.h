// Files as the job's processes name them. A process in a mount namespace
// of its own (a container: Apptainer or Singularity, Slurm's
// job_container/tmpfs plugin, unshare -m) names its files by paths that,
// in snap's own namespace, lead to other files or to none: its own /tmp,
// the container's /usr/lib. /proc/PID/maps and /proc/PID/fd show them as
// the process sees them (from its root); the dump reads such a process's
// files through that root (/proc/PID/root), held open from the stop on, so
// that it still leads there once the job runs again or has ended. Those
// paths name no symbolic link, so none leads back out to snap's root. (A
// chroot alone is not a view of its own: the kernel shows its paths from
// snap's root.)
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"

namespace snap {

// Whether process `pid` is in snap's own namespace of `kind` ("mnt",
// "user", ...: a name of /proc/PID/ns).
bool shares_namespace(pid_t pid, const char* kind);

class FileViews {
 public:
  FileViews() = default;
  FileViews(FileViews&&) noexcept = default;
  FileViews& operator=(FileViews&&) noexcept = default;

  // While the job is stopped: the views of ckpt's live processes whose
  // mount namespace is not snap's. Throws SysError where /proc/PID/root of
  // such a process cannot be opened.
  static FileViews open(const image::Checkpoint& ckpt);

  // The path by which snap reaches the file that process `pid` names by the
  // absolute `path`: `path` itself, or the same through that process's
  // root directory.
  std::string path(pid_t pid, const std::string& path) const;

 private:
  std::map<pid_t, ScopedFd> roots_;  // O_PATH on /proc/PID/root
};

// The files the image names by path for process `pid` (its executable,
// working directory, mapped files and the regular files and directories
// its fds hold) that, in snap's own namespace, lead to another file or to
// none: what a restore run outside the job's namespace would not find.
// Empty for a process sharing snap's view.
std::vector<std::string> paths_elsewhere(const image::Process& p, const FileViews& views);

// Where process `p` runs in a user namespace of its own (a rootless
// container, Apptainer's --fakeroot) whose ids it sees differently from
// snap (uid 0 there, uid 1000 here): its effective uid as it sees it;
// nullopt otherwise. A restore outside that namespace gives it snap's view
// of its ids, and none of its capabilities there.
std::optional<uint32_t> own_uid(const image::Process& p);

}  // namespace snap
