// userfaultfd for a process of the job or of a restore: the context is
// created by the process itself (only a context's own mm can be
// registered), taken into snap's fd table and closed in the process, so the
// job is left with no extra descriptor; everything else is ioctls on snap's
// copy. Used by the write tracker (tracer/write_tracker.h, asynchronous
// write-protect), the shared-memory snapshot (parasite/shared_snapshot.h,
// write-protect served by snap) and the restore's fill of private memory
// (restore/page_copier.h, UFFDIO_COPY).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "base/remote_ptr.h"
#include "base/scoped_fd.h"

namespace snap {

class RemoteSyscalls;

namespace uffd {

// Features of Linux 5.19 to 6.7, spelled out because the build machine's
// headers predate some of them (<linux/userfaultfd.h>).
inline constexpr uint64_t kFeatureEventFork = 1 << 1;          // UFFD_FEATURE_EVENT_FORK
inline constexpr uint64_t kFeatureEventRemap = 1 << 2;         // UFFD_FEATURE_EVENT_REMAP
inline constexpr uint64_t kFeatureEventRemove = 1 << 3;        // UFFD_FEATURE_EVENT_REMOVE
inline constexpr uint64_t kFeatureWpHugetlbfsShmem = 1 << 12;  // UFFD_FEATURE_WP_HUGETLBFS_SHMEM
inline constexpr uint64_t kFeatureWpUnpopulated = 1 << 13;     // UFFD_FEATURE_WP_UNPOPULATED
inline constexpr uint64_t kFeatureWpAsync = 1 << 15;           // UFFD_FEATURE_WP_ASYNC
// What the shared-memory snapshot asks of a context: write-protect of
// shmem, and the fork, mremap and madvise (MADV_REMOVE, MADV_DONTNEED)
// events.
inline constexpr uint64_t kSharedWpFeatures =
    kFeatureWpHugetlbfsShmem | kFeatureEventFork | kFeatureEventRemap | kFeatureEventRemove;
// userfaultfd() flag: faults the kernel takes on the process's behalf
// (copy_to_user in read(2), process_vm_writev into it) are not served but
// fail. What an unprivileged process may create without
// vm.unprivileged_userfaultfd.
inline constexpr int kUserModeOnly = 1;  // UFFD_USER_MODE_ONLY

// UFFDIO_API on a fresh context: the features this kernel offers. Throws
// SysError.
uint64_t offered_features(int uffd);
// UFFDIO_API asking for `features`. Throws SysError.
void enable_features(int uffd, uint64_t features);
// UFFDIO_REGISTER in write-protect mode; 0 or errno.
int register_wp(int uffd, uint64_t start, uint64_t end);
// UFFDIO_REGISTER in missing mode (for UFFDIO_COPY); 0 or errno.
int register_missing(int uffd, uint64_t start, uint64_t end);
// UFFDIO_COPY of `len` bytes (whole pages) from `src` in snap to `dst` in
// the context's process, a page at a time allocated and filled (no zeroing,
// no fault), without waking anyone. The bytes copied (the kernel may stop
// early: call again for the rest), or -errno when none was (-EEXIST: the
// page at `dst` is there already).
int64_t copy(int uffd, remote_addr dst, const void* src, uint64_t len);
// UFFDIO_WRITEPROTECT setting (or clearing, which also wakes a thread
// waiting on a page of the range) the protection of [start, end); 0 or errno.
int write_protect(int uffd, uint64_t start, uint64_t end, bool protect = true);

// Whether this process may write-protect anonymous shared memory with a
// context that serves every fault (the kernel's too) and follows forks and
// mremap, as the shared-memory snapshot needs: tried on a page of its own.
// Empty when it may, else why not. A job of the same user is allowed
// the same.
std::string shared_write_protect_refused();

int pidfd_open(pid_t pid);
int pidfd_getfd(int pidfd, int fd);

// userfaultfd(flags) executed by the stopped process of `rs` (thread group
// `pid`); its descriptor is taken into snap's table and closed in the
// process at once, whatever happens next. Throws SysError naming the pid and
// the call, with `hint` as what to do.
ScopedFd create_in(RemoteSyscalls& rs, pid_t pid, int flags, const std::string& hint);

}  // namespace uffd
}  // namespace snap
