// Where a restored tree's pids come from. Two kinds of pid space:
//   - the host's own pid namespace: clone3(set_tid) gives each process its
//     saved pid there; needs CAP_CHECKPOINT_RESTORE (root), and the pids
//     must be free;
//   - a fresh user + pid namespace (ordinary users, or root with
//     --isolate): the caller's uid and gid are mapped to themselves, snap's
//     own init is pid 1 of the namespace, and inside it every process gets
//     its saved pid with clone3(set_tid), which the namespace's owner may
//     do. Pids cannot clash with anything, and a job restored this way and
//     dumped again keeps its pids (the dump records the job's own view).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"

namespace snap::restore {

class PidSpawner {
 public:
  virtual ~PidSpawner() = default;
  // Creates a child with pid `want` (a fork of the caller) that runs
  // `child` and _exit()s with its result; the parent gets `exit_signal`
  // when it ends (0: none, and only a __WALL wait collects it). Returns the
  // child's pid. With `clone_parent` the child is the caller's sibling
  // instead (CLONE_PARENT: its parent's child, told with the caller's own
  // exit signal; `exit_signal` is not used). Throws Error saying who holds
  // the pid, or what privilege is missing.
  virtual pid_t spawn(pid_t want, const std::function<int()>& child, int exit_signal = SIGCHLD,
                      bool clone_parent = false) = 0;
};

class PidSpace {
 public:
  virtual ~PidSpace() = default;
  // Starts the root of the tree with pid `want` (as the job sees it; 0:
  // any, for a job started afresh), running `child` (its skeleton). Returns the process snap restore is
  // the parent of and waits for: the root itself, or the namespace's init.
  virtual pid_t start_root(pid_t want, const std::function<int()>& child) = 0;
  // The root's parent, as the root sees it (its skeleton checks it).
  virtual pid_t root_parent() const = 0;
  // The spawner the skeletons use for the processes they create.
  virtual PidSpawner& spawner() = 0;
  // Whether the pids are snap's own namespace's (they must be free there,
  // and are what /proc shows) or a fresh namespace's.
  virtual bool fresh() const = 0;
  // The pid snap (in the host namespace) uses for a process of the tree,
  // given its saved pid; identity in the host's own space. Throws Error
  // when no such process exists (yet).
  virtual pid_t host_pid(pid_t saved) = 0;
  // The tree is rebuilt and running: from now on it must outlive snap.
  virtual void released() {}
  // The saved → host pid pairs of the tree, for `snap restore -v`.
  virtual std::map<pid_t, pid_t> host_pids() { return {}; }
  // The clocks the tree's processes are to read when it starts (a time
  // namespace of its own, made by start_root); none: the node's.
  void set_clocks(const std::optional<image::JobClocks>& clocks) { clocks_ = clocks; }

 protected:
  // In the process about to make the root: a time namespace for it where
  // clocks_ says, else nothing (a kernel without them: the node's clocks,
  // with a warning).
  void enter_clocks() const;

 private:
  std::optional<image::JobClocks> clocks_;
};

// The host's pid namespace (clone3 set_tid, CAP_CHECKPOINT_RESTORE).
std::unique_ptr<PidSpace> make_host_pid_space();
// Whether this process may choose the pids of its children (clone3
// set_tid): root in the user namespace that owns its pid namespace, with
// CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN. Not uid 0 of a user namespace
// below it (a rootless container, `unshare -r`): that one owns no pid
// namespace snap's children are made in.
bool may_choose_pids();
// A fresh user + pid namespace (any user whose kernel allows them). With
// `own_proc`, also a mount namespace with the pid namespace's own /proc
// (where the kernel allows it), so that /proc/PID names the tree's
// processes by the pids they have there.
std::unique_ptr<PidSpace> make_namespace_pid_space(bool own_proc = true);

// "pid 1234 is in use by 'counter' (state S)" or empty when free.
std::string describe_pid_user(pid_t pid);

}  // namespace snap::restore
