#include "restore/ns_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fmt/core.h>

#include "base/error.h"
#include "base/scoped_fd.h"

namespace snap::restore {

std::optional<std::string> namespace_kind(const std::string& link) {
  static const char* const kKinds[] = {"cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"};
  auto colon = link.find(":[");
  if (colon == std::string::npos || !link.ends_with("]")) return std::nullopt;
  std::string kind = link.substr(0, colon);
  std::string num = link.substr(colon + 2, link.size() - colon - 3);
  if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  for (const char* k : kKinds)
    if (kind == k) return kind;
  return std::nullopt;
}

int open_namespace(const std::string& link, int flags, const std::string& what) {
  auto kind = namespace_kind(link);
  if (!kind) throw Error(what + ": '" + link + "' is not a namespace");
  const uint64_t want = std::stoull(link.substr(kind->size() + 2));
  // pid and time: the process's own, or the one its children get.
  std::string names[2] = {*kind, *kind + "_for_children"};
  uint64_t seen = 0;
  for (const auto& name : names) {
    if (name.ends_with("_for_children") && *kind != "pid" && *kind != "time") break;
    std::string path = "/proc/self/ns/" + name;
    ScopedFd fd(::open(path.c_str(), (flags & ~(O_CREAT | O_EXCL | O_TRUNC)) | O_CLOEXEC));
    if (!fd) throw SysError(what + ": open " + path, errno);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw SysError(what + ": fstat " + path, errno);
    if (st.st_ino == want) return fd.release();
    seen = st.st_ino;
  }
  throw Error(fmt::format("{}: the job held its {} namespace {}, and snap restore runs in "
                          "another ({})",
                          what, *kind, want, seen),
              "restore where the job ran, in the same namespaces (without --isolate for user "
              "and pid namespaces)");
}

}  // namespace snap::restore
