// The data model of a checkpoint: everything a restore needs, as plain
// structs. Dump fills it, the image layer stores it (checkpoint.json.lz4 for
// these facts, the page store for memory), restore and `snap info` read it.
// The on-disk encoding is defined in src/image/FORMAT.md; bump
// kFormatVersion when a change would confuse an older reader.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/types.h>

#include <array>
#include <map>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace snap::image {

constexpr uint32_t kFormatVersion = 16;  // 2: process trees; 3: checkpoint series (shared packs);
                                        // 4: eventfd counters, epoll instances;
                                        // 5: the rest of issue #14 (sockets, anon fds,
                                        //    locks, deleted files, stops, membarrier);
                                        // 6: checkpoint.json.lz4, plain images' pages.idx
                                        //    without page hashes
                                        // 7: no block headers in pages.bin, raw blocks
                                        //    of up to 4 MiB, pagemap.bin.lz4
                                        // 8: files of temporary directories whose
                                        //    contents are in the page store
                                        // 9: deleted files and memfds whose contents
                                        //    are in the page store
                                        // 10: processes' capability sets
                                        // 11: threads' scheduling (policy, nice),
                                        //     mappings' guard regions
                                        // 12: threads' CPU binding (affinity),
                                        //     processes' NUMA memory policy
                                        // 13: mappings' NUMA memory policy
                                        // 14: datagrams' senders
                                        // 15: threads' seccomp filters
                                        // 16: raw blocks summed page by page,
                                        //     pages.bin's checksum of its blocks'
constexpr uint32_t kOldestFormatVersion = 1;  // still read: what it lacks is optional
constexpr uint64_t kPageSize = 4096;

// A process's capability sets (/proc/PID/status CapInh, CapPrm, CapEff,
// CapBnd, CapAmb), bit n for capability n.
struct Capabilities {
  uint64_t inheritable = 0, permitted = 0, effective = 0, bounding = 0, ambient = 0;
  bool operator==(const Capabilities&) const = default;
};

// One thread's CPU state, captured while it was in a ptrace stop.
// A thread's scheduling (sched_getattr): its policy (SCHED_OTHER, BATCH,
// IDLE, FIFO, RR, DEADLINE), nice value, real-time priority and, for
// SCHED_DEADLINE, its runtime, deadline and period in ns; and its I/O
// priority (ioprio_get: class << 13 | level; 0: none set, it follows nice).
struct Scheduling {
  uint32_t policy = 0;  // SCHED_OTHER
  bool reset_on_fork = false;
  int32_t nice = 0;
  uint32_t priority = 0;
  uint64_t runtime = 0, deadline = 0, period = 0;
  uint32_t ioprio = 0;
  bool operator==(const Scheduling&) const = default;
};

// A thread's seccomp: strict mode, or its filters, oldest first, each as
// the kernel holds it (PTRACE_SECCOMP_GET_FILTER: struct sock_filter
// records, 8 bytes each) with the flags the kernel reports for it
// (PTRACE_SECCOMP_GET_METADATA: SECCOMP_FILTER_FLAG_LOG).
struct SeccompFilter {
  std::vector<uint8_t> program;
  uint64_t flags = 0;
};
struct Seccomp {
  bool strict = false;
  std::vector<SeccompFilter> filters;
};

struct ThreadState {
  pid_t tid = 0;
  std::string comm;             // the thread's name (PR_GET_NAME, by the parasite)
  std::vector<uint8_t> gpregs;  // struct user_regs_struct (NT_PRSTATUS), incl. fs/gs base
  std::vector<uint8_t> xsave;   // NT_X86_XSTATE area, as long as the kernel returned it
  uint64_t sigmask = 0;         // blocked signals (PTRACE_GETSIGMASK)
  std::vector<std::vector<uint8_t>> pending;         // siginfo_t (128 B) each, private queue
  std::vector<std::vector<uint8_t>> pending_shared;  // same, process-wide queue (leader only)
  // The thread was stopped inside a system call that the kernel would have
  // restarted (rax held -ERESTART*); restore re-issues syscall_nr (its
  // registers say so), but a restart_syscall ends with EINTR.
  bool in_syscall = false;
  int64_t syscall_nr = -1;
  // Filled by the parasite (issue 4); absent when not collected.
  std::optional<std::array<uint64_t, 3>> sigaltstack;  // ss_sp, ss_flags, ss_size
  std::optional<uint64_t> clear_child_tid;
  // The thread's registered restartable-sequences area: address, length,
  // signature (PTRACE_GET_RSEQ_CONFIGURATION); restore registers it again.
  std::optional<std::array<uint64_t, 3>> rseq;
  // The thread's robust futex list: head address and length (get_robust_list).
  std::optional<std::array<uint64_t, 2>> robust_list;
  // Absent: SCHED_OTHER at nice 0 (images of version 11 on; older ones
  // did not record it).
  std::optional<Scheduling> sched;
  // The CPUs the thread was bound to (sched_getaffinity), where that was
  // not what the job was given (Checkpoint::job_cpus): taskset, numactl,
  // an MPI launcher's or OpenMP's binding. Empty: not bound (or an image
  // older than version 12).
  std::vector<uint32_t> cpus;
  // Its NUMA memory policy of its own, where it is not its process's
  // (Process::mempolicy): "bind:1", or "default" for none where the
  // process has one (libnuma's numa_set_membind or numa_set_preferred in a
  // worker thread). Empty: the process's (version 13).
  std::string mempolicy;
  // Seccomp the thread set up itself (version 15): absent where it ran
  // under the mode and filters snap ran under (none, or those of a
  // container both ran in).
  std::optional<Seccomp> seccomp;
};

enum class MappingKind : uint8_t {
  Anonymous,   // private anonymous (incl. heap, thread stacks)
  SharedAnon,  // MAP_SHARED|MAP_ANONYMOUS (or /dev/zero, memfd shared)
  File,        // file-backed, private or shared
  Heap,        // [heap]
  Stack,       // [stack]
  Vdso,        // [vdso]
  Vvar,        // [vvar]
  VvarVclock,  // [vvar_vclock]
  Vsyscall,    // [vsyscall]: fixed by the kernel, never restored
  Aio,         // an AIO context's ring (io_setup): made again by io_setup, moved here
};

struct Mapping;
// A shared memory object rather than private memory or a file on disk:
// anonymous shared memory, memfd, SysV segments, and a shared mapping of a
// file deleted since (a POSIX semaphore or /dev/shm segment its creator
// unlinked). Its pages are in the image; mappings with the same dev and
// inode, in any process, are one object.
bool is_shm_object(const Mapping& m);
// The name restore gives the memfd it makes for anonymous shared memory
// (maps: "/dev/zero (deleted)"), also a GhostFile's of kind Memfd when the
// job held such memory as a file (an fd or a private mapping of it, opened
// through /proc/PID/map_files).
inline constexpr std::string_view kAnonShmemName = "snap-shm";

struct Mapping {
  uint64_t start = 0, end = 0;  // [start, end), page aligned
  int prot = 0;                 // PROT_READ | PROT_WRITE | PROT_EXEC
  bool shared = false;          // MAP_SHARED (else private)
  MappingKind kind = MappingKind::Anonymous;
  uint64_t pgoff = 0;           // file offset in bytes
  std::string path;             // file path, or "[heap]" etc.; empty for anonymous
  uint64_t dev = 0, inode = 0;  // of the mapped file
  std::string vmflags;          // smaps VmFlags, e.g. "rd wr mr mw me ac sd"
  // Memory content lives in the page store; this says how many of its pages
  // have an entry there (zero pages are recorded without data).
  uint64_t pages_dumped = 0;
  // A mapping of a deleted file or a memfd: the GhostFile (by id) restore
  // maps instead of a path; 0: none.
  uint64_t ghost = 0;
  // Every page of the mapping is in the page store, read through it: a
  // private mapping of a deleted file no fd of the job holds, which snap
  // could not open without CAP_CHECKPOINT_RESTORE (a library replaced
  // while the job ran). Its kind is then Anonymous (path still the file's):
  // restore makes it private anonymous memory holding those pages.
  bool all_pages = false;
  // Guard regions (MADV_GUARD_INSTALL, Linux 6.13): [start, end) ranges of
  // pages where any access faults; restore installs them again.
  std::vector<std::array<uint64_t, 2>> guards;
  // Kind Aio: the ring's size in events (struct aio_ring's nr); where it
  // was read to and written to (head, tail: slots, 0 to nr - 1; version
  // 11), and the completed events the job had not collected yet, the
  // 32-byte struct io_event of each slot from head to tail.
  uint32_t aio_nr = 0;
  uint32_t aio_head = 0, aio_tail = 0;
  std::vector<uint8_t> aio_events;
  // A MAP_SHARED mapping of a file on tmpfs (/dev/shm: POSIX shared memory,
  // MPI's shared-memory transports), all of whose data lies in the ranges
  // the job maps: memory a restore may find gone (another node, a cleaned
  // /dev/shm) or changed (the job ran on), so its pages are in the page
  // store as for anonymous shared memory, and restore makes the file again
  // at its path with this size, mode and owner.
  struct NamedShm {
    uint64_t size = 0;
    uint32_t mode = 0, uid = 0, gid = 0;
  };
  std::optional<NamedShm> named_shm;
  // A MAP_SHARED mapping, that a mapping of the tree may write, of a
  // regular file elsewhere (a numpy.memmap array, an out-of-core solver's
  // file): what the job writes there is part of its state, and the file
  // at a restore holds what the job wrote after the dump (it ran on, then
  // died). So the data of the mapped range is in the page store as for
  // anonymous shared memory, and restore writes it back into the file, in
  // place, before the job maps it: the file's other bytes are left as
  // they are. `size`: the file's size at the dump.
  struct SavedFile {
    uint64_t size = 0;
  };
  std::optional<SavedFile> saved_file;
  // Private memory from the hugetlb pool (MAP_HUGETLB, a private mapping
  // of a hugetlbfs file: libhugetlbfs, Cray's craype-hugepages): its huge
  // page size in bytes, kind Anonymous, every page it holds saved; restore
  // maps it MAP_HUGETLB of that size. Kind SharedAnon: anonymous shared
  // memory from the pool (MAP_SHARED with MAP_HUGETLB, SHM_HUGETLB), whose
  // object restore makes an MFD_HUGETLB memfd of that size. 0: none.
  uint64_t hugetlb_page = 0;
  // Its NUMA memory policy of its own (mbind), as numa_maps writes it
  // ("bind:0-1", "interleave:0-3"), where it differs from the process's
  // (Process::mempolicy); empty: none (version 13).
  std::string mempolicy;
};

// Whether a VmFlags list ("rd wr mr mw me dc") has `flag` ("dc"), as a
// whole word.
inline bool has_vmflag(std::string_view vmflags, std::string_view flag) {
  // A dump asks this of every mapping, tens of thousands while the job is
  // stopped: a search for the name, then a check that it is a whole word.
  if (flag.empty()) return false;
  for (size_t pos = vmflags.find(flag); pos != std::string_view::npos;
       pos = vmflags.find(flag, pos + 1)) {
    const size_t end = pos + flag.size();
    if ((pos == 0 || vmflags[pos - 1] == ' ') && (end == vmflags.size() || vmflags[end] == ' '))
      return true;
  }
  return false;
}

// A shared mapping through which the job writes its file, or may once it
// makes it writable (VmFlags "mw": the file was open for writing).
inline bool may_write_file(const Mapping& m) {
  return m.shared && ((m.prot & PROT_WRITE) || has_vmflag(m.vmflags, "mw"));
}

inline bool is_shm_object(const Mapping& m) {
  return m.kind == MappingKind::SharedAnon ||
         (m.kind == MappingKind::File && m.shared &&
          (m.path.ends_with(" (deleted)") || m.named_shm || m.saved_file));
}

enum class FdType : uint8_t {
  Regular, Directory, Pipe, Fifo, Socket, Tty, CharDev, EventFd, Epoll,
  SignalFd, TimerFd, Inotify, PidFd, Other
};

// A timerfd (fdinfo): its clock, the flags of its last timerfd_settime
// (TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET), the expirations not yet
// read, and its period and time left (relative, also for an absolute timer).
struct TimerFdState {
  int32_t clock_id = 0;
  int32_t settime_flags = 0;
  uint64_t ticks = 0;
  int64_t interval_ns = 0, value_ns = 0;
};

// One watch of an inotify instance (fdinfo "inotify" lines): its number,
// the mask inotify_add_watch was given, and the watched file found by its
// handle at dump time (path, and the inode it had then), or, for a file
// deleted since that the job still holds, its GhostFile (path empty).
struct InotifyWatch {
  int32_t wd = 0;
  uint32_t mask = 0;
  std::string path;
  uint64_t dev = 0, inode = 0;
  uint64_t ghost = 0;  // the watched file is this GhostFile (by id); 0: none
  // At dump time only (not saved): why no path leads to the file, while
  // path is empty and ghost not yet found.
  std::string unfound;
};

// A lock held through an fd (fdinfo "lock:" lines). POSIX locks belong to
// the process; flock, OFD locks and leases to the open file description.
enum class LockKind : uint8_t { Posix, Flock, Ofd, Lease };
struct FileLock {
  LockKind kind = LockKind::Posix;
  bool write = false;       // F_WRLCK / LOCK_EX, else F_RDLCK / LOCK_SH
  uint64_t start = 0;       // byte range (POSIX, OFD)
  uint64_t len = 0;         // 0: to the end of the file
};

// Who gets SIGIO / SIGURG for an open file description (F_GETOWN_EX,
// F_GETSIG, F_GETOWNER_UIDS).
struct FileOwner {
  int32_t type = 0;   // F_OWNER_TID, F_OWNER_PID or F_OWNER_PGRP
  int32_t pid = 0;    // 0: no owner
  int32_t signum = 0; // F_SETSIG; 0: SIGIO
  uint32_t uid = 0, euid = 0;  // credentials recorded by F_SETOWN
};

// One file an epoll instance watches (fdinfo "tfd:"): the watched fd's
// number in the process holding the epoll fd, and what epoll_ctl was given.
struct EpollTarget {
  int fd = -1;
  uint32_t events = 0;  // the registered mask, incl. EPOLLET / EPOLLONESHOT
  uint64_t data = 0;    // epoll_data as the job set it
  // The job closed `fd` (or put another file there) but holds the watched
  // file as this fd: restore registers it under `fd` through a copy. -1: none.
  int via = -1;
};

struct FileDesc;

// A unix socket (sock_diag and the socket itself, at dump time).
struct UnixSocket {
  int type = 0;             // SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET
  int state = 0;            // udiag_state: TCP_ESTABLISHED (1), TCP_LISTEN (10), TCP_CLOSE (7)
  uint64_t peer_inode = 0;  // inode of the connected peer socket, 0 if none
  std::string name;         // bound address: a path, "@name" for the abstract namespace, or empty
  // Data queued for reading on this socket, oldest first: one entry per
  // message (datagram / record); a stream socket has at most one entry.
  std::vector<std::vector<uint8_t>> queue;
  // Connected to snap itself (a `snap checkpoint` waiting for its answer):
  // restore makes it a socket whose peer is closed, with `queue` waiting.
  bool detached_peer = false;
  int shutdown = 0;  // sk_shutdown: 1 no more receives, 2 no more sends (either side's doing)
  int backlog = 0;   // listening: the backlog listen() was given
  // A path name: the inode of the socket file bind() made (0: abstract,
  // unbound or not known), and whether that file was gone at dump time.
  uint64_t name_inode = 0;
  bool name_deleted = false;
  // The socket file's permission bits and owner (a path name whose file
  // was there at dump; version 11): restore gives the file it binds them.
  struct NameFile {
    uint32_t mode = 0, uid = 0, gid = 0;
    bool operator==(const NameFile&) const = default;
  };
  std::optional<NameFile> name_file;
  // Connected (dgram) to a socket outside the image: that socket's name,
  // which restore connects to again.
  std::string peer_name;
  // Files passed along with the messages of `queue` (SCM_RIGHTS, datagram
  // and seqpacket sockets), one list per message, in the order they were
  // passed (fd -1; empty: none, and in older images). Restore sends them
  // along again.
  std::vector<std::vector<FileDesc>> queue_fds;
  // The name of the socket each message of `queue` came from (datagram
  // sockets: "@name", a path, "" for an unnamed one), which recvfrom gives
  // the job; empty: none named (and in images before version 14). Restore
  // sends each message from a socket bound to that name.
  std::vector<std::string> queue_senders;
  // Listening: the sockets whose connections wait to be accepted, by
  // inode, in the order accept() takes them (all in the image). Restore
  // connects them again in that order.
  std::vector<uint64_t> pending;
  // A connected socket whose connection waits to be accepted: the
  // listening socket's inode (its peer has no inode then: peer_inode 0).
  uint64_t pending_on = 0;
};

// An established TCP connection read in repair mode (TCP_REPAIR), both
// ends of it in the image: restore makes the socket again in repair mode
// with the same sequence numbers, options, window and queued data, so
// neither end notices. Or, saved by an ordinary user (`peeked`), only what
// each end had not read: restore connects the two ends again and sends it.
struct TcpConnection {
  uint32_t send_seq = 0;  // TCP_QUEUE_SEQ of the send queue: after its last byte (write_seq)
  uint32_t recv_seq = 0;  // of the receive queue: after the last byte received (rcv_nxt)
  // Written by the job, not acknowledged by the peer yet, oldest first; the
  // last `unsent` bytes of it were never sent.
  std::vector<uint8_t> send_queue;
  uint32_t unsent = 0;
  std::vector<uint8_t> recv_queue;  // received, not read by the job yet
  uint32_t mss = 0;                 // TCP_MAXSEG in repair mode (mss_clamp)
  uint32_t options = 0;             // tcpi_options: TCPI_OPT_TIMESTAMPS, _SACK, _WSCALE
  uint32_t snd_wscale = 0, rcv_wscale = 0;
  uint32_t timestamp = 0;           // TCP_TIMESTAMP (with TCPI_OPT_TIMESTAMPS)
  // TCP_REPAIR_WINDOW: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup.
  std::optional<std::array<uint32_t, 5>> window;
  // The nf_tables table (family inet) that drops what the peer sends while
  // the job is down (dump --kill of a connection to a peer outside the
  // image: tracer/net_lock.h); the restore removes it. Empty: none.
  std::string network_lock;
  // Saved without repair mode (no CAP_NET_ADMIN), both ends in the image:
  // only recv_queue is filled (peeked), nothing was in flight; the restore
  // connects the two sockets again at their addresses and sends it.
  bool peeked = false;
};

// An AF_INET / AF_INET6 socket (getsockname, getpeername, sock_diag).
struct InetSocket {
  int family = 0;    // AF_INET or AF_INET6
  int type = 0;      // SOCK_STREAM, SOCK_DGRAM, ...
  int protocol = 0;  // SO_PROTOCOL: IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, ...
  int state = 0;     // as sock_diag's idiag_state (TCP states: 1 established, 7 close, 10 listen)
  std::string local, peer;  // addresses as inet_ntop writes them; peer empty: not connected
  uint16_t local_port = 0, peer_port = 0;
  int shutdown = 0;  // sk_shutdown: 1 no more receives, 2 no more sends
  int backlog = 0;   // listening: the backlog listen() was given
  std::optional<TcpConnection> tcp;  // an established TCP connection (repair mode, or peeked)
  // A TCP connection to a peer outside the job saved as closed (dump
  // --tcp-close): nothing of it was read; restore makes a socket shut down
  // both ways, as one whose peer went away.
  bool closed = false;
};

// One socket option the job changed from what a new socket of the same
// kind has: setsockopt(level, name, value) restores it (SO_RCVBUF and
// SO_SNDBUF: half the value, the kernel doubles what it is given).
struct SockOpt {
  int level = 0, name = 0;
  std::vector<uint8_t> value;  // as getsockopt returned it
};

// Which pseudo-terminal (Checkpoint::ptys, by index) an fd of type Tty is
// and which side: the master (/dev/ptmx), or the slave (/dev/pts/N, or
// /dev/tty naming it as the controlling terminal).
struct PtyEnd {
  uint32_t index = 0;
  bool master = false;
};

struct FileDesc {
  int fd = -1;
  FdType type = FdType::Other;
  std::string path;    // readlink of /proc/PID/fd/N
  int flags = 0;       // open flags (fdinfo "flags", octal), incl. O_CLOEXEC
  uint64_t pos = 0;    // fdinfo "pos"
  uint64_t inode = 0;  // for pipes: the pipe inode, to pair ends
  uint64_t size = 0;   // regular files: size at dump time
  uint32_t mode = 0;   // st_mode of the target
  // Unread data in a pipe (parasite): on the lowest read-end fd of the pipe
  // in the process that holds it, and the same bytes on the lowest write-end
  // fd of that pipe in that process, if any (restore refills write ends).
  std::vector<uint8_t> pipe_data;
  // The open file description (struct file) behind the fd: fds with equal
  // non-zero ids, in one process or several, share it (offset, status
  // flags), as after dup() or fork(). 0: not known (format 1).
  uint64_t file_id = 0;
  std::optional<UnixSocket> unix_socket;  // type Socket of family AF_UNIX
  std::optional<InetSocket> inet_socket;  // type Socket of family AF_INET / AF_INET6
  std::vector<SockOpt> sock_options;      // type Socket: options the job set
  std::vector<uint8_t> sock_filter;       // type Socket: classic BPF filter (struct sock_filter[])
  // Type EventFd: the counter (fdinfo "eventfd-count") and EFD_SEMAPHORE.
  uint64_t eventfd_count = 0;
  bool eventfd_semaphore = false;
  // Type Epoll: the fds it watches, by their numbers in this process. A dump
  // refuses an epoll watching a file this process no longer holds at all.
  std::vector<EpollTarget> epoll_targets;
  // Type SignalFd: the signals it reads (fdinfo "sigmask", bit n-1 for signal n).
  uint64_t signalfd_mask = 0;
  std::optional<TimerFdState> timerfd;      // type TimerFd
  std::vector<InotifyWatch> inotify_watches;  // type Inotify, by ascending wd
  std::vector<FileLock> locks;              // regular files and directories
  std::optional<FileOwner> owner;           // absent: no owner, no signal set
  // Type PidFd: the process it refers to (fdinfo "Pid:"), as the job sees it.
  int32_t pidfd_pid = 0;
  uint32_t pipe_size = 0;  // pipes and FIFOs: capacity (F_GETPIPE_SZ); 0: not recorded
  // A deleted file, directory or FIFO, or a memfd: the GhostFile (by id)
  // restore opens this fd on again; 0: none.
  uint64_t ghost = 0;
  // Type Tty: a pseudo-terminal whose master a process of the image holds.
  // Absent: any other terminal (reopened by path, or snap restore's own).
  std::optional<PtyEnd> pty;
  // At dump time only (not saved): the mount the file is on (fdinfo
  // "mnt_id"), which with `inode` tells it from another.
  uint64_t mnt_id = 0;
};

// The termios of a terminal, as the kernel's struct termios2 (TCGETS2).
struct Termios {
  uint32_t iflag = 0, oflag = 0, cflag = 0, lflag = 0;
  uint8_t line = 0;
  std::vector<uint8_t> cc;  // c_cc, 19 bytes
  uint32_t ispeed = 0, ospeed = 0;
};

// A pseudo-terminal pair whose master a process of the image holds, or
// whose master was closed while the job holds its slave (hung_up).
struct Pty {
  uint32_t index = 0;  // N of /dev/pts/N at dump time (restore may get another)
  Termios termios;
  std::array<uint16_t, 4> winsize{};  // ws_row, ws_col, ws_xpixel, ws_ypixel
  bool locked = false;   // TIOCGPTLCK: the slave cannot be opened yet
  bool packet = false;   // TIOCPKT on the master
  // The leader of the session that has it as controlling terminal, a
  // process of the image; 0: none. And that session's foreground group.
  pid_t session = 0, fg_pgrp = 0;
  // Written to the master, not yet read from the slave (after the slave's
  // input processing); written to the slave, not yet read from the master.
  std::vector<uint8_t> input, output;
  // Where in `input` an end of file (VEOF, ^D, in canonical mode) ended a
  // line: offsets, ascending; the character itself is not in `input`.
  std::vector<uint64_t> input_eofs;
  // The slave's node in /dev/pts (grantpt, fchown): owner, group and
  // st_mode; mode 0: not recorded.
  uint32_t uid = 0, gid = 0, mode = 0;
  // The master was closed before the dump (no process of the image holds
  // it; the node is gone): the slave fds are hung up, nothing else is kept.
  bool hung_up = false;
};

// One extent of a ghost file's data (holes between extents stay holes).
struct GhostExtent {
  uint64_t offset = 0;
  std::vector<uint8_t> data;
};

// A file the job holds that no path leads to any more (it was unlinked,
// or is a memfd), saved once for all the fds, mappings and cwds that
// refer to it. Restore makes it again, under its old name, then unlinks
// it: the restored fds are deleted files again, sharing one inode.
struct GhostFile {
  // ProcDir: /proc/PID of a process that has ended since (path "/proc/PID").
  enum class Kind : uint8_t { File, Memfd, Fifo, Directory, ProcDir };
  uint64_t id = 0;           // > 0, unique in the checkpoint
  Kind kind = Kind::File;
  std::string path;          // the old path without " (deleted)"; a memfd's name
  uint32_t mode = 0;         // st_mode (type and permission bits)
  uint32_t uid = 0, gid = 0;
  uint64_t size = 0;
  int64_t atime_ns = 0, mtime_ns = 0;
  uint64_t nlink = 0;        // links left at dump time (another name still leads to it)
  uint64_t dev = 0, inode = 0;
  // nlink > 0: the file's handle (name_to_handle_at), restore opens the
  // same inode by it; data is then empty.
  int32_t handle_type = 0;
  std::vector<uint8_t> handle;
  uint32_t seals = 0;        // memfd: F_GET_SEALS
  std::vector<GhostExtent> data;  // File and Memfd with nlink 0: the contents
  // Its contents are in the page store (pagemap tables of kFilePagesPid,
  // below), not in data: a File of Checkpoint::temp_files (from version
  // 8), a File or Memfd of Checkpoint::ghost_files with nlink 0 (from 9).
  bool data_in_pages = false;
  // An entry of Checkpoint::temp_files under a path the user named for the
  // job's files to go with each checkpoint (dump --with-files): restore
  // puts it back as it was where a file is there but differs (size or
  // modification time), not only where it is missing.
  bool put_back = false;
  // put_back entries, entries of temp_files with data_in_pages, and ghost
  // files with data_in_pages that no shared mapping maps: the file's status
  // change time (st_ctim), recorded only where it was at least kSettledNs
  // before the file was read, so that any later change to the file has a
  // later one, whatever the timestamp granularity of its file system; 0:
  // not recorded. The next checkpoint of a series refers to this one's
  // contents for a file that still has the same dev, inode, size, mtime and
  // ctime instead of reading it again.
  int64_t ctime_ns = 0;
};

// How long before it was read a kept file must have last changed for its
// ctime to be recorded (GhostFile::ctime_ns).
inline constexpr int64_t kSettledNs = int64_t{2} * 1000 * 1000 * 1000;

// Whether the parts of ghost g the job maps shared come back from those
// mappings' pages (restore/shared_memory.cc) rather than from g's own
// contents, which then leave them out (from version 9): a file or memfd
// without links whose seals let a restore write it once it is made (every
// memfd made without MFD_ALLOW_SEALING has F_SEAL_SEAL alone).
inline bool filled_from_mappings(const GhostFile& g) {
  constexpr uint32_t kWriteSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;
  return g.nlink == 0 && (g.kind == GhostFile::Kind::File || g.kind == GhostFile::Kind::Memfd) &&
         (g.seals & kWriteSeals) == 0;
}

// The pagemap keys pages by (pid, mapping start). The contents of a file
// that the page store holds (GhostFile::data_in_pages) are keyed as pid
// kFilePagesPid and mapping start file_pages_start(id) for an entry of
// Checkpoint::temp_files, ghost_pages_start(id) for one of ghost_files:
// the file's byte `off` is at that start + off. No process has pid 0, and
// a file stored this way is smaller than kFilePagesSpan.
constexpr pid_t kFilePagesPid = 0;
constexpr uint64_t kFilePagesSpan = uint64_t{1} << 44;  // 16 TiB
// Spans 1 .. kGhostPagesBase - 1 are those of temp_files, the ones above
// those of ghost_files (span kGhostPagesBase + id).
constexpr uint64_t kGhostPagesBase = uint64_t{1} << 19;
constexpr uint64_t kMaxFilePagesId = kGhostPagesBase - 1;
constexpr uint64_t kMaxGhostPagesId = (UINT64_MAX >> 44) - kGhostPagesBase;
constexpr uint64_t file_pages_start(uint64_t id) { return id * kFilePagesSpan; }
constexpr uint64_t ghost_pages_start(uint64_t id) { return (kGhostPagesBase + id) * kFilePagesSpan; }

struct MmLayout {
  uint64_t start_code = 0, end_code = 0, start_data = 0, end_data = 0;
  uint64_t start_brk = 0, brk = 0, start_stack = 0;
  uint64_t arg_start = 0, arg_end = 0, env_start = 0, env_end = 0;
  std::vector<uint64_t> auxv;  // raw (key, value) pairs, ending with AT_NULL
};

struct Rlimit {
  int resource = 0;
  uint64_t cur = 0, max = 0;
};

struct SigAction {  // kernel struct sigaction, from the parasite (issue 4)
  int signo = 0;
  uint64_t handler = 0, flags = 0, restorer = 0, mask = 0;
};

// A timer's period and time to next expiry, in nanoseconds (0/0: disarmed).
struct TimerValue {
  int64_t interval_ns = 0, value_ns = 0;
};

// A POSIX timer (timer_create), from /proc/PID/timers and the parasite.
struct PosixTimer {
  int32_t id = 0;
  int32_t clock_id = 0;
  int32_t signo = 0;          // sigev_signo
  uint64_t sigev_value = 0;   // sigev_value as the kernel shows it
  std::string notify;         // /proc/PID/timers "notify:", e.g. "signal/pid.123"
  TimerValue value;           // timer_gettime
  int32_t overrun = 0;        // timer_getoverrun
};

struct Process {
  pid_t pid = 0, ppid = 0, pgid = 0, sid = 0;
  // An exited child its parent has not reaped yet: only the ids above, comm
  // and exit_status are meaningful (no threads, memory or fds).
  bool zombie = false;
  int32_t exit_status = 0;  // zombie: the status wait() returns (exit code / signal)
  std::string comm, exe, cwd, root;
  uint64_t cwd_ghost = 0;  // the cwd was removed: its GhostFile (kind Directory); 0: none
  uint64_t exe_ghost = 0;  // the executable was deleted (rebuilt, say): its GhostFile; 0: none
  uint32_t umask = 022;
  uint32_t personality = 0;
  // The NUMA memory policy of its main thread, as numa_maps writes it
  // ("interleave:0-3", "bind:1"); empty: the default (or not recorded,
  // before version 12). Restore gives it to every thread.
  std::string mempolicy;
  std::array<uint32_t, 4> uids{}, gids{};  // real, effective, saved, fs
  std::optional<std::vector<uint32_t>> groups;  // supplementary groups (absent: not recorded)
  std::vector<Rlimit> rlimits;
  MmLayout mm;
  std::vector<Mapping> mappings;  // sorted by start
  std::vector<FileDesc> fds;      // sorted by fd
  std::vector<ThreadState> threads;  // threads[0] is the thread-group leader
  std::vector<SigAction> sigactions;  // empty when not collected
  // Collected by the parasite; absent / empty when it did not run.
  std::optional<std::array<TimerValue, 3>> itimers;  // ITIMER_REAL, _VIRTUAL, _PROF
  std::vector<PosixTimer> posix_timers;
  std::optional<int32_t> pdeathsig;  // PR_GET_PDEATHSIG
  std::optional<int32_t> dumpable;   // PR_GET_DUMPABLE
  std::optional<int32_t> child_subreaper;  // PR_GET_CHILD_SUBREAPER
  // Stopped by job control (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU) at the
  // dump: the signal; a restore leaves it stopped. 0: running.
  int32_t stop_signal = 0;
  // membarrier(2) registrations, as the REGISTER commands that made them
  // (MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED 4, ..._PRIVATE_EXPEDITED 16,
  // ..._SYNC_CORE 64, ..._RSEQ 256), or'ed. 0: none.
  uint32_t membarrier = 0;
  // /proc/PID/loginuid (the audit login uid); 4294967295: unset. Absent
  // (older images): not recorded.
  std::optional<uint32_t> loginuid;
  // From /proc/PID (format 4); absent: not recorded, left as restore finds them.
  std::optional<int32_t> oom_score_adj;  // /proc/PID/oom_score_adj
  std::optional<bool> thp_disabled;      // PR_GET_THP_DISABLE (status "THP_enabled: 0")
  std::optional<bool> no_new_privs;      // PR_GET_NO_NEW_PRIVS (status "NoNewPrivs")
  // Its capability sets (format 10), where it shares the dumper's user
  // namespace (elsewhere they mean another namespace's capabilities);
  // absent: not recorded, and a restore leaves the ones the job's uid gives.
  std::optional<Capabilities> caps;
};

// What identifies a file's contents: the executable and every file a job
// maps, so that a restore never runs saved memory against other code.
struct FileStamp {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  uint64_t dev = 0, inode = 0;
  std::string build_id;  // hex of the ELF NT_GNU_BUILD_ID note, or empty
};

// One state component of the XSAVE area in the standard (uncompacted)
// format: CPUID leaf 0xD gives where it starts and its length. The offsets
// of the AVX-512 and later components differ between CPUs (an Intel CPU
// with MPX has them 256 bytes further than an AMD one).
struct XsaveComponent {
  uint32_t id = 0, offset = 0, size = 0;
  bool operator==(const XsaveComponent&) const = default;
};

// The job's monotonic and boot-time clocks (CLOCK_MONOTONIC,
// CLOCK_BOOTTIME, ns) as it saw them when the dump ended. A restore gives
// it a time namespace in which they go on from there: they count from the
// node's boot, so another node, or this one rebooted, would have them jump,
// backwards as often as not.
struct JobClocks {
  int64_t monotonic_ns = 0, boottime_ns = 0;
};

// The CPU a job ran on, as its code could see it (tracer/cpu_features.h).
struct CpuInfo {
  std::string vendor;                 // "GenuineIntel", "AuthenticAMD"
  std::string model;                  // the brand string
  std::vector<std::string> features;  // sorted: "avx2", "avx512f", "sha_ni"
  uint64_t xcr0 = 0;                  // the XSAVE state components enabled
  std::vector<XsaveComponent> xsave_layout;  // components 2 and up of xcr0, by id
};

struct Checkpoint {
  uint32_t format_version = kFormatVersion;
  std::string snap_version;
  std::string created;         // ISO 8601 UTC
  std::string hostname;
  std::string kernel_release;  // uname -r at dump time
  // The dump machine's CPU; absent in older images (no CPU is compared).
  std::optional<CpuInfo> cpu;
  // The dump kernel's vDSO image (what it maps as [vdso]); empty in older
  // images. A restore under a kernel with another vDSO redirects the job's
  // calls into it (restore/vdso.h).
  std::vector<uint8_t> vdso;
  // Absent in older images (restored with the node's clocks, as before).
  std::optional<JobClocks> clocks;
  // processes[0] is the root of the dumped tree; every other process's
  // parent (ppid) comes before it.
  std::vector<Process> processes;
  // Set when the checkpoint is one of a series (FORMAT.md, "Checkpoint
  // series"): its number there, filled in by the series writer's commit().
  std::optional<uint64_t> series_number;
  // How the dumper found the pages that changed since the previous
  // checkpoint: "full", "content-hash", "uffd-wp", ...; empty: not said.
  std::string changed_pages_by;
  // The pid namespace the job's ids are recorded in (issue #11): "own" when
  // the job ran in a pid namespace below the dumper's (its ids, as the job
  // saw them, differ from the host's), "host" when it ran in the dumper's
  // namespace; empty: not said (older images, recorded as the dumper saw it).
  std::string pid_namespace;
  // The CPUs the job was given (its root's parent's affinity at the dump:
  // the batch script's, snap run's), against which ThreadState::cpus is a
  // binding; empty where not known (older images).
  std::vector<uint32_t> job_cpus;
  // The executables and mapped files of all processes, by path (empty in
  // older images, which are then not checked).
  std::map<std::string, FileStamp> code_files;
  // Deleted files and memfds the processes hold (fds, mappings, cwds),
  // referred to by FileDesc::ghost, Mapping::ghost, Process::cwd_ghost and
  // Process::exe_ghost.
  std::vector<GhostFile> ghost_files;
  // The job's files in the node's temporary directories (/tmp, /var/tmp,
  // /dev/shm, $TMPDIR) that a restore elsewhere, or after a site's
  // cleanup, would find gone: directories (those holding what the job
  // holds there), FIFOs and regular files the job holds open, with their
  // contents (small ones in data, larger ones in the page store: data_in_pages). In the GhostFile shape (id > 0, kind Directory, Fifo or
  // File, nlink as at the dump); sorted by path. Restore makes each one
  // that is missing, and leaves one that is there as it is.
  std::vector<GhostFile> temp_files;
  // Pseudo-terminals whose master the processes hold (FileDesc::pty).
  std::vector<Pty> ptys;
};

}  // namespace snap::image
