// The ids of a dumped job as the job itself sees them (issue #11).
//
// snap dump works on host pids: it is given the job's pid as seen from its
// own (usually the initial) pid namespace, and every /proc read, ptrace
// request, pidfd and memory read uses those. But a job may run inside a pid
// namespace of its own (it was restored into one, or started in one), where
// its processes have other, smaller pids. The image records the ids as the
// job sees them — its innermost pid namespace — so that a restore into a
// fresh pid namespace gives it its own pids back, and dump → restore → dump
// never nests deeper or changes them.
//
// This is the one place that translates: the dump collects a Checkpoint with
// host ids, reads a PidView of the (still stopped) tree, keys stored pages
// by PidView::pid() and applies the view to the Checkpoint before commit.
// A job in the dumper's own pid namespace gets the identity view: nothing
// changes.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "image/checkpoint.h"

namespace snap::pidview {

// The NS* lines of /proc/PID/status (or NSpid of /proc/PID/task/TID/status):
// one value per pid-namespace level, from the reader's namespace (first:
// the id the dumper uses) to the process's own (last: the id it sees).
// A level where the id is not visible (a group leader outside the
// namespace) reads 0. Empty when the line is missing (kernel < 4.1).
struct NsIds {
  std::vector<pid_t> pid, pgid, sid;
};
NsIds parse_ns_ids(std::string_view status_text);

// What was read for one process of the tree (or one zombie).
struct ProcIds {
  pid_t host = 0;       // the dumper's view
  NsIds ns;             // its NSpid / NSpgid / NSsid
  std::string pid_ns;   // readlink /proc/PID/ns/pid, "pid:[4026531836]"; empty: unknown (zombie)
  std::map<pid_t, pid_t> threads;  // host tid -> tid in its own namespace
};

class PidView {
 public:
  // The identity: the job is in the dumper's pid namespace.
  PidView() = default;

  // From the ids of every process (and zombie) of the tree, root first, and
  // the root's parent as the job sees it (0: outside its namespace). Throws
  // Error naming the pid when the processes are not all in one pid
  // namespace (different NSpid depths, or different ns/pid links).
  static PidView build(const std::vector<ProcIds>& procs, pid_t root_parent);

  // Is the job in a pid namespace below the dumper's?
  bool own_namespace() const { return own_; }
  // The id of host pid/tid `host` as the job sees it; ids not of the tree
  // (0, or a pid outside it) are returned unchanged.
  pid_t pid(pid_t host) const;
  // Rewrites every id of `c` (pid, ppid, pgid, sid, thread ids, POSIX
  // timers' notify targets) to the job's view, and sets c.pid_namespace.
  // The root's ppid becomes root_parent.
  void apply(image::Checkpoint& c) const;

 private:
  bool own_ = false;
  pid_t root_host_ = 0, root_parent_ = 0;
  std::map<pid_t, pid_t> ids_;         // host pid or tid -> own-namespace id
  std::map<pid_t, pid_t> pgid_, sid_;  // host pid -> own-namespace pgid / sid
};

// Throws Error when `pid` (the root of a tree to dump) is the init of a pid
// namespace below the dumper's (pid 1 there: a container's init, as
// bwrap --unshare-pid, apptainer --pid or podman start one): a restore gives
// the job's namespace an init of snap's own, so it could not bring this one
// back; the hint names its children, the job to dump instead.
void check_not_namespace_init(pid_t pid);

// Reads the view of a stopped tree from /proc: `c` holds the host ids as
// collected (processes with their threads, then zombies). Throws Error for
// a tree that spans several pid namespaces.
PidView read_pid_view(const image::Checkpoint& c);

// Thread `tid` of process `pid` (host ids) as it sees itself: gettid() in
// its own pid namespace (the last value of its NSpid); `tid` when /proc
// shows no NSpid.
pid_t own_tid(pid_t pid, pid_t tid);
// Process `pid` (host id, a zombie too) as it and its parent see it: what
// a wait4() inside the job names it by. `pid` when /proc shows no NSpid.
pid_t own_pid(pid_t pid);
// Whether process `pid` sees the pids snap sees (no pid namespace of its
// own): pages of what is read before the stop are stored under the job's
// own pids, which are snap's then. False when it cannot be read.
bool sees_snaps_pids(pid_t pid);

// "signal/pid.123", "thread/tid.123" (/proc/PID/timers notify) with the
// id translated by `view`; other texts ("none/pid.0") unchanged.
std::string translate_notify(const std::string& notify, const PidView& view);

}  // namespace snap::pidview
