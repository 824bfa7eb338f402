#include "restore/posix_locks.h"

#include <fcntl.h>
#include <sys/syscall.h>

#include <fmt/core.h>

namespace snap::restore {

void take_posix_locks(SyscallBatch& batch, const image::Process& p) {
  size_t n = 0;
  for (const auto& f : p.fds)
    for (const auto& l : f.locks) {
      if (l.kind != image::LockKind::Posix) continue;
      struct flock fl {};
      fl.l_type = static_cast<short>(l.write ? F_WRLCK : F_RDLCK);
      fl.l_whence = SEEK_SET;
      fl.l_start = static_cast<off_t>(l.start);
      fl.l_len = static_cast<off_t>(l.len);
      batch.reserve(1, sizeof fl);
      batch.add(fmt::format("fd {} ({}): POSIX {} lock on bytes {}+{} (another process may hold "
                            "a conflicting one)",
                            f.fd, f.path, l.write ? "write" : "read", l.start,
                            l.len ? std::to_string(l.len) : "EOF"),
                SYS_fcntl, static_cast<uint64_t>(f.fd), F_SETLK, batch.put_value(fl).as_int());
      n++;
    }
  if (n) batch.run();
}

}  // namespace snap::restore
