#include "tracer/file_view.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <set>

#include <fmt/core.h>

#include "base/error.h"

namespace snap {

namespace {

bool same_file(const char* a, const char* b) {
  struct stat sa {}, sb {};
  return ::stat(a, &sa) == 0 && ::stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

}  // namespace

bool shares_namespace(pid_t pid, const char* kind) {
  return same_file(fmt::format("/proc/{}/ns/{}", pid, kind).c_str(),
                   fmt::format("/proc/self/ns/{}", kind).c_str());
}

FileViews FileViews::open(const image::Checkpoint& ckpt) {
  FileViews views;
  for (const auto& p : ckpt.processes) {
    if (p.zombie) continue;
    if (shares_namespace(p.pid, "mnt")) continue;
    const std::string root = fmt::format("/proc/{}/root", p.pid);
    ScopedFd fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!fd)
      throw SysError(fmt::format("pid {} runs in a mount namespace of its own; open {}", p.pid,
                                 root),
                     errno);
    views.roots_.emplace(p.pid, std::move(fd));
  }
  return views;
}

std::string FileViews::path(pid_t pid, const std::string& path) const {
  auto it = roots_.find(pid);
  if (it == roots_.end() || path.empty() || path[0] != '/') return path;
  return fmt::format("/proc/self/fd/{}{}", it->second.get(), path);
}

std::vector<std::string> paths_elsewhere(const image::Process& p, const FileViews& views) {
  std::set<std::string> paths;
  auto consider = [&](const std::string& path) {
    if (path.empty() || path[0] != '/' || path.ends_with(" (deleted)")) return;
    paths.insert(path);
  };
  consider(p.exe);
  consider(p.cwd);
  for (const auto& m : p.mappings)
    if (m.kind == image::MappingKind::File && !m.ghost) consider(m.path);
  for (const auto& f : p.fds)
    if ((f.type == image::FdType::Regular || f.type == image::FdType::Directory) && !f.ghost)
      consider(f.path);
  std::vector<std::string> out;
  for (const auto& path : paths) {
    const std::string seen = views.path(p.pid, path);
    if (seen == path) continue;
    struct stat job {};
    if (::stat(seen.c_str(), &job) != 0) continue;  // gone for the job too: not ours to say
    if (!same_file(seen.c_str(), path.c_str())) out.push_back(path);
  }
  return out;
}

std::optional<uint32_t> own_uid(const image::Process& p) {
  if (p.zombie || shares_namespace(p.pid, "user")) return std::nullopt;
  // Each line: first id inside, first id here (snap's namespace), count.
  std::ifstream map(fmt::format("/proc/{}/uid_map", p.pid));
  const uint64_t uid = p.uids[1];
  uint64_t inside, here, count;
  while (map >> inside >> here >> count)
    if (uid >= here && uid - here < count) {
      const uint64_t seen = inside + (uid - here);
      if (seen == uid) return std::nullopt;
      return static_cast<uint32_t>(seen);
    }
  return std::nullopt;
}

}  // namespace snap
