#include "restore/thread_proc_files.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/core.h>
#include <utility>
#include <vector>

#include "restore/file_planner.h"

namespace snap::restore {

void open_thread_proc_files(SyscallBatch& batch, const image::Process& p,
                            const ProcessFiles& files) {
  std::vector<std::pair<const FdAction*, size_t>> opened;
  for (const auto& a : files.fds) {
    if (!a.after_threads) continue;
    batch.reserve(1, a.path.size() + 1);
    const int flags = (a.flags & ~(O_CREAT | O_EXCL | O_TRUNC)) | O_CLOEXEC;
    opened.emplace_back(
        &a, batch.add(fmt::format("cannot restore {}: open (a thread's /proc file; the thread "
                                  "must be restored before)",
                                  fd_name(p, *a.file)),
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

}  // namespace snap::restore
