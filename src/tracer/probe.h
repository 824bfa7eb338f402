// Probes for the kernel features snap relies on. Each probe really uses the
// feature (forks a child and attaches to it, creates a namespace, ...) on the
// running kernel with the caller's credentials; none reads a config file to
// guess. `snap check` prints the results; tests call the probes one by one.
//
// Every probe is bounded in time: children get a deadline and are killed and
// reaped when it passes. Probes report failures in their Result, they do not
// throw.
#pragma once

#include <string>
#include <vector>

namespace snap::probe {

// How a result weighs in the verdict.
enum class Need {
  kRequired,   // dump or restore cannot work without it
  kPidChoice,  // one of these is needed to give restored processes their pids
  kOptional,   // snap works without it, slower or with less
};

struct Result {
  std::string id;       // stable key for scripts, e.g. "ptrace"
  std::string title;    // short name for people, e.g. "ptrace attach"
  Need need = Need::kOptional;
  bool ok = false;
  std::string message;  // what the outcome means for the user
};

// fork + PTRACE_SEIZE/INTERRUPT, NT_PRSTATUS and NT_X86_XSTATE, detach.
// Adds the Yama ptrace_scope, when the kernel has Yama, to the message.
Result probe_ptrace();
// process_vm_readv of a page the child wrote.
Result probe_process_vm_readv();
// /proc/PID/pagemap of a child: present bit for a touched page, clear for an
// untouched one; says whether PFNs are visible.
Result probe_pagemap();
// clone3 with set_tid in the current pid namespace.
Result probe_set_tid();
// PR_SET_MM_MAP, re-setting a forked child's own layout unchanged.
Result probe_prctl_mm_map();
// unshare(CLONE_NEWUSER|CLONE_NEWPID), pid 1 inside, clone3 set_tid inside.
Result probe_userns_pidns();
// userfaultfd(2), falling back to /dev/userfaultfd; reports write-protect.
Result probe_userfaultfd();
// PAGEMAP_SCAN ioctl on /proc/self/pagemap.
Result probe_pagemap_scan();
// /proc/self/task/TID/children lists a forked child.
Result probe_proc_children();
// CAP_CHECKPOINT_RESTORE, CAP_SYS_ADMIN, CAP_SYS_PTRACE in the effective set.
std::vector<Result> probe_capabilities();
// clear_refs 4 on a child, then a write must set pagemap bit 55.
Result probe_soft_dirty();

// WriteTracker::supported(): userfaultfd async write-protect of a page of
// snap's own, PAGEMAP_SCAN reporting and re-protecting it, pidfd_getfd.
Result probe_write_tracking();
// uffd::shared_write_protect_refused(): a page of anonymous shared memory
// of snap's own write-protected as the shared-memory snapshot does.
Result probe_shared_write_protect();

// All of the above, in the order `snap check` prints them.
std::vector<Result> probe_all();

struct Verdict {
  bool can_dump_restore = false;
  std::string reason;  // empty when can_dump_restore; else what is missing
};

// Dump and restore can work when every kRequired result is ok and at least
// one kPidChoice result is ok.
Verdict judge(const std::vector<Result>& results);

// What works for this user, in three plain lines (issue #11): "dump",
// "restore" (in place, each process with its pid: clone3 set_tid) and
// "restore_userns" (in a new user+pid namespace, as an ordinary user does).
struct Summary {
  std::string id;     // "dump", "restore", "restore_userns"
  std::string title;  // "dump", "restore", "restore in a new user+pid namespace"
  bool ok = false;
  std::string why;    // the reason, always given
};
// From the probe results and the Yama ptrace_scope (-1: no Yama) and
// whether the caller has CAP_SYS_PTRACE.
std::vector<Summary> summarize(const std::vector<Result>& results, int yama_scope,
                               bool cap_sys_ptrace);
// The Yama ptrace_scope of this kernel, -1 without Yama.
int read_yama_scope();
// Whether the caller has CAP_SYS_PTRACE in its effective set.
bool has_cap_sys_ptrace();

}  // namespace snap::probe
