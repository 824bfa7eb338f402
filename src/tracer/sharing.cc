#include "tracer/sharing.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/core.h>
#include <algorithm>
#include <map>
#include <tuple>

#include "base/error.h"

namespace snap {

int open_file_order(pid_t pid1, int fd1, pid_t pid2, int fd2) {
  long r = ::syscall(SYS_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2);
  if (r < 0) {
    int err = errno;
    throw SysError(fmt::format("kcmp(KCMP_FILE, pid {} fd {}, pid {} fd {})", pid1, fd1, pid2, fd2),
                   err,
                   err == ENOSYS ? "this kernel lacks kcmp (CONFIG_KCMP): snap cannot tell which "
                                     "processes share an open file"
                                   : "");
  }
  // kcmp: 0 the same, 1 the first sorts before, 2 after, 3 unordered.
  if (r == 3) throw Error("kcmp(KCMP_FILE) gives no order on this kernel");
  return r == 0 ? 0 : r == 1 ? -1 : 1;
}

void check_fd_tables_not_shared(const std::vector<image::Process>& procs) {
  std::vector<pid_t> pids;
  for (const auto& p : procs)
    if (!p.zombie) pids.push_back(p.pid);
  auto order = [](pid_t a, pid_t b) {
    long r = ::syscall(SYS_kcmp, a, b, KCMP_FILES, 0, 0);
    if (r < 0) throw SysError(fmt::format("kcmp(KCMP_FILES, pid {}, pid {})", a, b), errno);
    return r;  // 0 the same, 1 a before b, 2 after
  };
  std::sort(pids.begin(), pids.end(), [&](pid_t a, pid_t b) { return order(a, b) == 1; });
  for (size_t i = 1; i < pids.size(); i++)
    if (order(pids[i - 1], pids[i]) == 0)
      throw Error(fmt::format("pids {} and {} share one fd table (clone with CLONE_FILES)",
                              pids[i - 1], pids[i]),
                  "snap cannot restore a shared fd table yet; nothing was killed");
}

bool same_open_file(pid_t pid1, int fd1, pid_t pid2, int fd2) {
  return open_file_order(pid1, fd1, pid2, fd2) == 0;
}

void assign_file_ids(std::vector<image::Process>& procs, const FileOrder& order) {
  struct Fd {
    size_t seen;  // order of appearance
    image::Process* p;
    image::FileDesc* f;
  };
  // Candidates: fds with the same type, mode and inode, and the same
  // offset and status flags (an open file description has one of each, read
  // from every fd while the tree is stopped; O_CLOEXEC belongs to the fd),
  // sorted by kcmp's order of their open file descriptions, so equal ones
  // are neighbours: O(n log n) kcmp calls, not one per pair (10,000 fds on
  // /dev/null), and none between fds that differ in offset.
  using Key = std::tuple<image::FdType, uint32_t, uint64_t, uint64_t, int>;
  std::map<Key, std::vector<Fd>> groups;
  size_t seen = 0;
  for (auto& p : procs)
    for (auto& f : p.fds)
      groups[{f.type, f.mode, f.inode, f.pos, f.flags & ~O_CLOEXEC}].push_back({seen++, &p, &f});
  std::vector<std::vector<Fd>> descriptions;
  for (auto& [key, fds] : groups) {
    std::stable_sort(fds.begin(), fds.end(), [&](const Fd& a, const Fd& b) {
      return order(a.p->pid, a.f->fd, b.p->pid, b.f->fd) < 0;
    });
    for (size_t i = 0; i < fds.size(); i++) {
      if (i == 0 || order(fds[i - 1].p->pid, fds[i - 1].f->fd, fds[i].p->pid, fds[i].f->fd) != 0)
        descriptions.emplace_back();
      descriptions.back().push_back(fds[i]);
    }
  }
  // Ids 1..N in order of each description's first appearance.
  for (auto& d : descriptions)
    std::sort(d.begin(), d.end(), [](const Fd& a, const Fd& b) { return a.seen < b.seen; });
  std::sort(descriptions.begin(), descriptions.end(),
            [](const auto& a, const auto& b) { return a.front().seen < b.front().seen; });
  uint64_t id = 1;
  for (auto& d : descriptions) {
    for (auto& fd : d) fd.f->file_id = id;
    id++;
  }
}

}  // namespace snap
