#include "tracer/sharing.h"

#include <linux/kcmp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/core.h>
#include <map>
#include <tuple>

#include "base/error.h"

namespace snap {

bool same_open_file(pid_t pid1, int fd1, pid_t pid2, int fd2) {
  long r = ::syscall(SYS_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2);
  if (r < 0) {
    int err = errno;
    throw SysError(fmt::format("kcmp(KCMP_FILE, pid {} fd {}, pid {} fd {})", pid1, fd1, pid2, fd2),
                   err,
                   err == ENOSYS ? "this kernel lacks kcmp (CONFIG_KCMP): snap cannot tell which "
                                     "processes share an open file"
                                   : "");
  }
  return r == 0;
}

void assign_file_ids(std::vector<image::Process>& procs, const SameFile& same) {
  struct Description {
    uint64_t id;
    pid_t pid;  // one fd that has it
    int fd;
  };
  // Candidates: fds with the same type, mode and inode.
  std::map<std::tuple<image::FdType, uint32_t, uint64_t>, std::vector<Description>> known;
  uint64_t next_id = 1;
  for (auto& p : procs) {
    for (auto& f : p.fds) {
      auto& candidates = known[{f.type, f.mode, f.inode}];
      f.file_id = 0;
      for (const auto& d : candidates) {
        if (same(d.pid, d.fd, p.pid, f.fd)) {
          f.file_id = d.id;
          break;
        }
      }
      if (!f.file_id) {
        f.file_id = next_id++;
        candidates.push_back({f.file_id, p.pid, f.fd});
      }
    }
  }
}

}  // namespace snap
