#include "tracer/userfaultfd.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include <fmt/core.h>

#include "base/error.h"
#include "tracer/remote.h"

namespace snap::uffd {

uint64_t offered_features(int uffd) {
  uffdio_api api{};
  api.api = UFFD_API;
  if (::ioctl(uffd, UFFDIO_API, &api) != 0) throw SysError("ioctl(UFFDIO_API)", errno);
  return api.features;
}

void enable_features(int uffd, uint64_t features) {
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = features;
  if (::ioctl(uffd, UFFDIO_API, &api) != 0)
    throw SysError(fmt::format("ioctl(UFFDIO_API, features {:#x})", features), errno);
}

namespace {

int register_range(int uffd, uint64_t start, uint64_t end, uint64_t mode) {
  uffdio_register reg{};
  reg.range.start = start;
  reg.range.len = end - start;
  reg.mode = mode;
  return ::ioctl(uffd, UFFDIO_REGISTER, &reg) == 0 ? 0 : errno;
}

}  // namespace

int register_wp(int uffd, uint64_t start, uint64_t end) {
  return register_range(uffd, start, end, UFFDIO_REGISTER_MODE_WP);
}

int register_missing(int uffd, uint64_t start, uint64_t end) {
  return register_range(uffd, start, end, UFFDIO_REGISTER_MODE_MISSING);
}

int64_t copy(int uffd, remote_addr dst, const void* src, uint64_t len) {
  uffdio_copy c{};
  c.dst = dst.as_int();
  c.src = reinterpret_cast<uint64_t>(src);
  c.len = len;
  c.mode = UFFDIO_COPY_MODE_DONTWAKE;
  if (::ioctl(uffd, UFFDIO_COPY, &c) == 0) return static_cast<int64_t>(len);
  if (c.copy > 0) return c.copy;
  return c.copy < 0 ? c.copy : -errno;
}

int write_protect(int uffd, uint64_t start, uint64_t end, bool protect) {
  uffdio_writeprotect wp{};
  wp.range.start = start;
  wp.range.len = end - start;
  wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
  return ::ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) == 0 ? 0 : errno;
}

std::string shared_write_protect_refused() {
  ScopedFd fd(static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
  if (!fd)
    return errno == EPERM ? "userfaultfd(2) serving the kernel's own faults is refused to this "
                            "user (vm.unprivileged_userfaultfd = 0)"
                          : fmt::format("userfaultfd(2): {}", std::strerror(errno));
  try {
    enable_features(fd.get(), kSharedWpFeatures);
  } catch (const SysError& e) {
    return fmt::format("{} (write-protecting shared memory needs Linux 5.19)", e.what());
  }
  const uint64_t ps = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  void* p = ::mmap(nullptr, ps, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return fmt::format("mmap: {}", std::strerror(errno));
  auto start = reinterpret_cast<uint64_t>(p);
  std::string why;
  if (int e = register_wp(fd.get(), start, start + ps))
    why = fmt::format("UFFDIO_REGISTER of shared memory: {}", std::strerror(e));
  else if (int e2 = write_protect(fd.get(), start, start + ps))
    why = fmt::format("UFFDIO_WRITEPROTECT of shared memory: {}", std::strerror(e2));
  fd.reset();
  ::munmap(p, ps);
  return why;
}

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_getfd(int pidfd, int fd) { return static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, fd, 0)); }

ScopedFd create_in(RemoteSyscalls& rs, pid_t pid, int flags, const std::string& hint) {
  ScopedFd pidfd(pidfd_open(pid));
  if (!pidfd) throw SysError(fmt::format("pidfd_open({})", pid), errno);
  long fd = rs.syscall(SYS_userfaultfd, static_cast<uint64_t>(flags));
  if (fd < 0)
    throw SysError(fmt::format("userfaultfd({}) in pid {}",
                               flags & kUserModeOnly ? "UFFD_USER_MODE_ONLY" : "", pid),
                   static_cast<int>(-fd), hint);
  ScopedFd mine(pidfd_getfd(pidfd.get(), static_cast<int>(fd)));
  int getfd_err = errno;
  long closed = rs.syscall(SYS_close, static_cast<uint64_t>(fd));
  if (!mine) throw SysError(fmt::format("pidfd_getfd(pid {}, fd {})", pid, fd), getfd_err);
  if (closed < 0)
    throw SysError(fmt::format("close of fd {} in pid {}", fd, pid), static_cast<int>(-closed));
  return mine;
}

}  // namespace snap::uffd
