#include "restore/thread_proc_files.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/core.h>
#include <functional>
#include <map>
#include <set>
#include <utility>

#include "restore/file_planner.h"

namespace snap::restore {

void open_thread_proc_files(SyscallBatch& batch, const image::Process& p,
                            const ProcessFiles& files) {
  std::vector<std::pair<const FdAction*, size_t>> opened;
  for (const auto& a : files.fds) {
    if (!a.thread_of) continue;
    batch.reserve(1, a.path.size() + 1);
    const int flags = (a.flags & ~(O_CREAT | O_EXCL | O_TRUNC)) | O_CLOEXEC;
    opened.emplace_back(
        &a, batch.add(fmt::format("cannot restore {}: open (a /proc file of a thread of pid {})",
                                  fd_name(p, *a.file), a.thread_of),
                      SYS_openat, static_cast<uint64_t>(AT_FDCWD), batch.put(a.path).as_int(),
                      static_cast<uint64_t>(flags)));
  }
  if (opened.empty()) return;
  const std::vector<long> fds = batch.run();
  for (const auto& [a, i] : opened) {
    const auto fd = static_cast<uint64_t>(fds[i]);
    const auto target = static_cast<uint64_t>(a->target);
    batch.reserve(3, 0);
    batch.add(fmt::format("dup3 of {} to its number", fd_name(p, *a->file)), SYS_dup3, fd, target,
              a->cloexec ? O_CLOEXEC : 0);
    batch.add("close", SYS_close, fd);
    if (a->pos)
      batch.add(fmt::format("lseek of {}", fd_name(p, *a->file)), SYS_lseek, target, a->pos,
                SEEK_SET);
  }
}

std::vector<const image::Process*> rebuild_order(const image::Checkpoint& ckpt,
                                                 const OpenFiles& files) {
  std::map<pid_t, const image::Process*> live;
  for (const auto& p : ckpt.processes)
    if (!p.zombie) live[p.pid] = &p;
  std::vector<const image::Process*> order;
  std::set<pid_t> entered;
  std::function<void(const image::Process&)> place = [&](const image::Process& p) {
    if (!entered.insert(p.pid).second) return;  // placed already, or a cycle
    for (const auto& a : files.of(p.pid).fds)
      if (a.thread_of && a.thread_of != p.pid && live.count(a.thread_of))
        place(*live.at(a.thread_of));
    order.push_back(&p);
  };
  for (const auto& p : ckpt.processes)
    if (!p.zombie) place(p);
  return order;
}

}  // namespace snap::restore
