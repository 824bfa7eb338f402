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

// Gives every fd of `procs` (zombies have none) its FileDesc::file_id: fds
// that share one open file description, after dup() or fork(), in one
// process or several, get the same id; ids are 1..N in order of first
// appearance (processes, then fds, in order). Only fds of the same type and
// inode are compared, by sorting them in `order` (kcmp's order of open file
// descriptions on the live tree; tests pass their own): O(n log n) calls.
// Throws Error naming both pids when two processes of `procs` (zombies
// aside) share one fd table (clone CLONE_FILES): restore gives each its
// own. Compared in kcmp(KCMP_FILES) order: O(n log n) calls.
void check_fd_tables_not_shared(const std::vector<image::Process>& procs);

using FileOrder = std::function<int(pid_t pid1, int fd1, pid_t pid2, int fd2)>;
void assign_file_ids(std::vector<image::Process>& procs, const FileOrder& order = open_file_order);

}  // namespace snap
