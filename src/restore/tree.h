// The shape of a restored process tree: who forks whom, who starts a
// session or a process group, and which temporary helper processes hold the
// id of a process group whose leader had already exited. Decided from the
// image alone, before anything is created, so a layout restore cannot
// reproduce is refused up front.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "image/checkpoint.h"

namespace snap::restore {

// A process that exists only during restore: it takes the pid of a process
// group's exited leader and makes that group, so that the group's members
// can join it; it is killed and reaped once they have.
struct GroupHelper {
  pid_t pid = 0;      // = the process group id
  pid_t creator = 0;  // the process of the image that forks it (same session)
};

// A process that exists only during restore, for a session whose leader
// had exited before the dump (a daemon that forked twice, a `setsid` whose
// first process ended): it takes the session's id (its leader's pid),
// starts the session with setsid(), forks the processes of the session
// whose parent is outside it (with CLONE_PARENT: they are its creator's
// children, as in the image, born in the session and its first group) and
// ends; its creator reaps it before snap takes the tree over.
struct SessionHelper {
  pid_t pid = 0;      // = the session id
  pid_t creator = 0;  // the parent, in the image, of the processes it forks
  std::vector<const image::Process*> members;  // forked by it, in the image's order
};

struct TreePlan {
  struct Node {
    const image::Process* proc = nullptr;
    bool setsid = false;            // starts its own session (sid == pid)
    bool group_leader = false;      // makes its own group (pgid == pid), not via setsid
    // The group it joins after every process and helper exists (0: none to
    // join: it leads its own, or stays where it was born). external_group:
    // the group snap restore itself is in.
    pid_t join_group = 0;
    bool join_external_group = false;
    std::vector<const image::Process*> children;  // forked by this process, live ones first
    std::vector<GroupHelper> helpers;             // forked by this process
    std::vector<SessionHelper> session_helpers;   // forked by this process
    // Processes of the session this process leads whose parent is its own
    // parent (given to it when theirs ended, as to a subreaper): forked by
    // this process with CLONE_PARENT, born in its session and group.
    std::vector<const image::Process*> siblings;
  };
  std::map<pid_t, Node> nodes;  // every process of the image, by pid
  pid_t root = 0;
  // The root's session and group when they lead outside the image (the job
  // was started from a shell or a batch script): the restored tree takes
  // snap restore's own instead. 0 when the root leads its own.
  pid_t external_sid = 0, external_pgid = 0;
  std::vector<GroupHelper> helpers;
  std::vector<SessionHelper> session_helpers;

  const Node& node(pid_t pid) const { return nodes.at(pid); }
  // Every pid and tid the restore will take (processes, threads, helpers).
  std::vector<pid_t> all_ids() const;
};

// Throws Error naming the process when the image's tree is inconsistent or
// its sessions cannot be rebuilt (a session whose leader had exited whose
// processes outside it have several parents, or whose id another process
// of the image has now).
TreePlan plan_tree(const image::Checkpoint& ckpt);

}  // namespace snap::restore
