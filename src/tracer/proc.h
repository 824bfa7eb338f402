// Reading /proc/PID: parsers take the file's text (so tests can feed them
// fixed input) and readers fetch the text for a live process.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "image/checkpoint.h"

namespace snap::proc {

// Whole file as text; throws SysError naming the path.
std::string read_file(const std::string& path);
// Same, but nullopt when the file does not exist or cannot be read.
std::optional<std::string> try_read_file(const std::string& path);
// Writes `text` to the file in one write(2), as /proc and /sys files take
// a setting (uid_map, timens_offsets); throws SysError naming the path.
void write_file(const std::string& path, const std::string& text);
// The whole file `name` in directory `dirfd` (AT_FDCWD: a path), or "" with
// the errno that stopped reading it in *err. Only for /proc files the
// kernel makes in one piece (single_open: fdinfo, stat, status), whose
// first read, if short, is all of it: one read(2) instead of two.
std::string read_file_at(int dirfd, const char* name, int* err);
std::string read_link(const std::string& path);

// One line of /proc/PID/maps (+ the VmFlags of its smaps entry).
struct MapEntry {
  uint64_t start = 0, end = 0;
  bool r = false, w = false, x = false, shared = false;
  uint64_t offset = 0;
  uint32_t dev_major = 0, dev_minor = 0;
  uint64_t inode = 0;
  std::string path;     // may be empty, "[heap]", "/usr/lib/... (deleted)"
  std::string vmflags;  // from smaps; empty from plain maps
};
std::vector<MapEntry> parse_maps(std::string_view text);
// Parses /proc/PID/smaps: the mapping lines plus each entry's VmFlags.
// `maps_text`, when given, receives the mapping lines themselves, each
// with its newline: what /proc/PID/maps showed at the same time.
std::vector<MapEntry> parse_smaps(std::string_view text, std::string* maps_text = nullptr);

// The fields snap uses from /proc/PID/stat.
struct Stat {
  pid_t pid = 0;
  std::string comm;
  char state = '?';
  pid_t ppid = 0, pgrp = 0, session = 0;
  uint64_t flags = 0;  // PF_* (PF_KTHREAD = 0x00200000)
  int exit_signal = 0;  // signal the parent gets when this process ends
  int exit_code = 0;    // field 52: the wait status of an exited (zombie) process
  uint64_t start_code = 0, end_code = 0, start_stack = 0;
  uint64_t start_data = 0, end_data = 0, start_brk = 0;
  uint64_t arg_start = 0, arg_end = 0, env_start = 0, env_end = 0;
};
Stat parse_stat(std::string_view text);

// The fields snap uses from /proc/PID/status.
struct Status {
  std::string name;
  char state = '?';
  uint32_t umask = 022;
  pid_t tgid = 0, ppid = 0, tracer_pid = 0;
  std::array<uint32_t, 4> uids{}, gids{};
  std::vector<uint32_t> groups;  // supplementary groups
  // Absent from kernels too old to show them.
  std::optional<bool> thp_enabled;   // "THP_enabled:" (0: PR_SET_THP_DISABLE)
  std::optional<bool> no_new_privs;  // "NoNewPrivs:"
  int seccomp = 0;                   // "Seccomp:" 0 off, 1 strict, 2 filter
  int seccomp_filters = 0;           // "Seccomp_filters:"
  uint64_t rss_bytes = 0, swap_bytes = 0;  // "VmRSS:", "VmSwap:" (0 for a zombie)
  uint64_t locked_bytes = 0;               // "VmLck:": the size of its mlocked mappings
  int threads = 0;                         // "Threads:"
  // "SigBlk:", "SigIgn:" (hex; bit n-1 for signal n): the thread's blocked
  // signals, the process's ignored ones; absent: all.
  uint64_t sig_blocked = ~0ULL, sig_ignored = ~0ULL;
  // "x86_Thread_features:" ("shstk", "wrss"), from kernels that show it.
  std::vector<std::string> x86_thread_features;
  // "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:" (hex); absent
  // unless all five are shown.
  std::optional<image::Capabilities> caps;
};
Status parse_status(std::string_view text);

// /proc/PID/fdinfo/N.
struct FdInfo {
  uint64_t pos = 0;
  int flags = 0;
  uint64_t mnt_id = 0, ino = 0;
  uint64_t eventfd_count = 0;  // "eventfd-count:" (hex)
  bool eventfd_semaphore = false;
  // An epoll fd's "tfd:" lines, with the inode of each watched file ("ino:", hex).
  std::vector<std::pair<image::EpollTarget, uint64_t>> epoll_targets;
  // Anonymous-inode fds and locks (tracer/fd_state.h parses these lines).
  std::optional<uint64_t> sigmask;              // signalfd "sigmask:" (hex)
  std::optional<image::TimerFdState> timerfd;   // timerfd "clockid:" ... "it_interval:"
  struct InotifyMark {
    int32_t wd = 0;
    uint32_t mask = 0;
    uint64_t ino = 0;
    uint32_t sdev = 0;  // the kernel's dev_t: major << 20 | minor
    int32_t handle_type = 0;
    std::vector<uint8_t> handle;  // f_handle bytes
  };
  std::vector<InotifyMark> inotify;
  std::optional<int32_t> pidfd_pid;  // pidfd "Pid:" (-1: exited, 0: outside our pid namespace)
  std::vector<image::FileLock> locks;  // "lock:" lines snap restores
  std::string unsupported_lock;        // a "lock:" line it cannot (a lease being broken, ...)
};
FdInfo parse_fdinfo(std::string_view text);
// The inodes /proc/locks shows a lock, lease or waiter on (any device),
// sorted.
std::vector<uint64_t> parse_locked_inodes(std::string_view text);
// Reading /proc/locks takes the kernel's file_rwsem for writing, and the
// first to take it after a quiet while waits for an RCU grace period (10 to
// 20 ms on a virtual machine); whoever takes it within a grace period of
// the last does not. read_fds() with hints reads /proc/locks while the job
// is stopped (FdHints::locked_inodes, once a dump): one read just before
// the stop keeps that one short.
void warm_locks_read();

// /proc/PID/limits, as (resource, soft, hard) in RLIMIT_* order.
std::vector<image::Rlimit> parse_limits(std::string_view text);

// Space-separated pids (/proc/PID/task/TID/children).
std::vector<pid_t> parse_pid_list(std::string_view text);

// Readers for a live process.
std::vector<pid_t> list_threads(pid_t pid);   // /proc/PID/task, sorted, leader first
std::vector<pid_t> list_children(pid_t pid);  // union over all threads' children files
// The same for the threads `tids` of `pid` (a stopped process's, known).
std::vector<pid_t> list_children(pid_t pid, const std::vector<pid_t>& tids);
// `root` and its descendants as they are now, parents first; one whose
// children cannot be read (gone meanwhile) ends its branch.
std::vector<pid_t> list_tree(pid_t root);
std::vector<MapEntry> read_smaps(pid_t pid, std::string* maps_text = nullptr);
Stat read_stat(pid_t pid);
// Whether process `pid` has ended: gone from /proc, or a zombie (dead, not
// yet waited for). An unreadable stat counts as not ended.
bool has_ended(pid_t pid);
Status read_status(pid_t pid);
std::vector<uint64_t> read_auxv(pid_t pid);

class VmFlagsHints;
class FdHints;
// Everything about a (stopped) process that /proc shows, minus memory
// contents and thread registers. With hints (tracer/vmflags.h) the mappings
// come from /proc/PID/maps and take their flags from the hints where these
// fit, instead of from smaps; with fd hints (tracer/fd_hints.h) fds that
// fit theirs read only fdinfo.
image::Process read_process(pid_t pid, VmFlagsHints* hints = nullptr, FdHints* fd_hints = nullptr);
// Mappings of `pid`, classified (image::MappingKind), without content.
// With VmFlags they come from /proc/PID/smaps, which the kernel builds by
// walking every page (slow for a large process); lookups that need only the
// ranges, kinds and paths pass kRangesOnly to read the cheap /proc/PID/maps.
enum class MapDetail { kWithVmFlags, kRangesOnly };
std::vector<image::Mapping> read_mappings(pid_t pid, MapDetail detail = MapDetail::kWithVmFlags);
// The ranges (kRangesOnly) of each of `pids` that still runs, for what is
// read before a stop: a process gone meanwhile is left out (the stop
// tells).
std::vector<std::pair<pid_t, std::vector<image::Mapping>>> read_ranges_of(
    const std::vector<pid_t>& pids);
// Only the executable ones (PROT_EXEC), from /proc/PID/maps, without
// building the others (a process may have tens of thousands).
std::vector<image::Mapping> read_executable_mappings(pid_t pid);

}  // namespace snap::proc
