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
#include "base/parallel.h"

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

namespace {

// kcmp of the kernel object of `type` (KCMP_FILES, ...) that tasks `a` and
// `b` hold: 0 the same one, 1 or 2 an order between different ones.
long kcmp_object(pid_t a, pid_t b, int type) {
  long r = ::syscall(SYS_kcmp, a, b, type, 0, 0);
  if (r < 0) throw SysError(fmt::format("kcmp(pid {}, pid {}, type {})", a, b, type), errno);
  return r;
}

}  // namespace

void refuse_shared_tables(const std::vector<pid_t>& pids) {
  struct Kind {
    int type;
    const char* what;
  };
  static const Kind kKinds[] = {
      {KCMP_VM, "their memory (one was started with vfork or CLONE_VM and has not exec'd yet)"},
      {KCMP_FILES, "one fd table (clone with CLONE_FILES)"},
      {KCMP_FS, "one cwd, root and umask (clone with CLONE_FS)"},
      {KCMP_SIGHAND, "one table of signal handlers (clone with CLONE_SIGHAND)"},
  };
  for (const Kind& k : kKinds) {
    auto order = [&](pid_t a, pid_t b) { return kcmp_object(a, b, k.type); };
    std::vector<pid_t> sorted = pids;
    std::sort(sorted.begin(), sorted.end(), [&](pid_t a, pid_t b) { return order(a, b) == 1; });
    for (size_t i = 1; i < sorted.size(); i++)
      if (order(sorted[i - 1], sorted[i]) == 0)
        throw Error(fmt::format("pid {} and pid {} share {}", sorted[i - 1], sorted[i], k.what),
                    k.type == KCMP_VM ? "dump again in a moment, once the child has exec'd"
                                      : "snap cannot restore processes sharing that yet");
  }
}

void refuse_thread_tables(pid_t pid, const std::vector<pid_t>& tids) {
  // Two kcmp calls a thread, made while the job is stopped: a process with
  // many threads has them made by two threads of snap's (a CPU is free).
  parallel_for(tids.size(), tids.size() >= 64 ? 2 : 1, [&](size_t i) {
    const pid_t tid = tids[i];
    if (tid == pid) return;
    for (auto [type, what] : {std::pair{KCMP_FILES, "an fd table"}, std::pair{KCMP_FS, "a cwd, root and umask"}}) {
      if (kcmp_object(pid, tid, type) != 0)
        throw Error(fmt::format("thread {} of pid {} has {} of its own (unshare in that thread)", tid,
                                pid, what),
                    "snap cannot restore threads that do not share these with their process yet");
    }
  });
}

bool is_epoll_target(pid_t pid, int fd, int epoll_fd, int tfd, int nth) {
  kcmp_epoll_slot slot{};
  slot.efd = static_cast<__u32>(epoll_fd);
  slot.tfd = static_cast<__u32>(tfd);
  slot.toff = static_cast<__u32>(nth);
  long r = ::syscall(SYS_kcmp, pid, pid, KCMP_EPOLL_TFD, fd, &slot);
  if (r < 0)
    throw SysError(fmt::format("kcmp(KCMP_EPOLL_TFD, pid {} fd {}, epoll fd {} watch {} #{})", pid,
                               fd, epoll_fd, tfd, nth),
                   errno);
  return r == 0;
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
  // Each pair compared once: the sort's comparisons mostly include the
  // neighbours' that follow it (a group of two or three is most groups).
  std::map<std::pair<size_t, size_t>, int> known;
  auto compare = [&](const Fd& a, const Fd& b) {
    auto [it, fresh] = known.try_emplace({a.seen, b.seen}, 0);
    if (fresh) {
      it->second = order(a.p->pid, a.f->fd, b.p->pid, b.f->fd);
      known.try_emplace({b.seen, a.seen}, -it->second);
    }
    return it->second;
  };
  for (auto& [key, fds] : groups) {
    if (fds.size() == 1) {
      descriptions.push_back(std::move(fds));
      continue;
    }
    known.clear();
    std::stable_sort(fds.begin(), fds.end(), [&](const Fd& a, const Fd& b) { return compare(a, b) < 0; });
    for (size_t i = 0; i < fds.size(); i++) {
      if (i == 0 || compare(fds[i - 1], fds[i]) != 0) descriptions.emplace_back();
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
