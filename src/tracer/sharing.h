// What the processes of a stopped tree share: open file descriptions.
#pragma once

#include <sys/types.h>

#include <functional>
#include <vector>

#include "image/checkpoint.h"

namespace snap {

// Do fd1 of pid1 and fd2 of pid2 refer to one open file description?
// (kcmp KCMP_FILE.) Throws SysError naming both.
bool same_open_file(pid_t pid1, int fd1, pid_t pid2, int fd2);
// kcmp's order of the two open file descriptions: <0, 0 (the same), >0.
int open_file_order(pid_t pid1, int fd1, pid_t pid2, int fd2);
// Is fd of pid the file that pid's epoll `epoll_fd` watches as its
// `nth` (from 0) registration under number `tfd`? (kcmp KCMP_EPOLL_TFD.)
// False when fd is another file; throws SysError on other failures.
bool is_epoll_target(pid_t pid, int fd, int epoll_fd, int tfd, int nth);

// Refuses (throws, naming both pids) processes of the tree that share what
// processes of their own normally do not: memory (a vfork child that has
// not exec'd yet), the fd table, the cwd/root/umask or the signal handlers
// (clone with CLONE_VM, CLONE_FILES, CLONE_FS or CLONE_SIGHAND but not
// CLONE_THREAD). Restore makes each process its own of these, so the job
// would not behave as before. O(n log n) kcmp calls.
void refuse_shared_tables(const std::vector<pid_t>& pids);
// Refuses (throws, naming the thread) a thread of process `pid` with an fd
// table or cwd/root/umask of its own (unshare(CLONE_FILES or CLONE_FS) in
// that thread): restore gives all threads of a process the process's. Two
// kcmp calls a thread.
void refuse_thread_tables(pid_t pid, const std::vector<pid_t>& tids);

// Gives every fd of `procs` (zombies have none) its FileDesc::file_id: fds
// that share one open file description, after dup() or fork(), in one
// process or several, get the same id; ids are 1..N in order of first
// appearance (processes, then fds, in order). Only fds of the same type and
// inode are compared, by sorting them in `order` (kcmp's order of open file
// descriptions on the live tree; tests pass their own): O(n log n) calls.

using FileOrder = std::function<int(pid_t pid1, int fd1, pid_t pid2, int fd2)>;
void assign_file_ids(std::vector<image::Process>& procs, const FileOrder& order = open_file_order);

}  // namespace snap
