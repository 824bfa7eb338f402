/*
 * Wire protocol between snap (the host) and the parasite blob running inside
 * the target. Shared by C++ host code and the freestanding C blob, so it is
 * plain C: fixed-width types, explicit padding, no pointers (all addresses are
 * plain u64 in the *target's* address space and never dereferenced by the
 * host).
 *
 * Transport: a connected SOCK_STREAM unix socket. Every message is a header
 * followed by exactly `payload_len` bytes of payload. Bump
 * SNAP_PARASITE_VERSION on any layout change; the blob answers a command of
 * another version with -EPROTONOSUPPORT and keeps serving.
 */
#ifndef SNAP_PARASITE_PROTOCOL_H
#define SNAP_PARASITE_PROTOCOL_H

#include <stdint.h>

#define SNAP_PARASITE_MAGIC 0x534e4150u /* "PANS" in memory: snap parasite */
#define SNAP_PARASITE_VERSION 8u /* 2: GET_MISC has child_subreaper; 3: thread slots;
                                    4: FINI waits for the host to hang up;
                                    5: thread entries wait on the service socket;
                                    6: thread state has the thread's name;
                                    7: a thread slot tells when its thread left;
                                    8: thread state has its NUMA memory policy */

/* Limits the blob enforces; larger requests get -E2BIG. */
#define SNAP_PARASITE_MAX_TIMERS 64u   /* POSIX timers per GET_ITIMERS */
#define SNAP_PARASITE_MAX_CMD_PAYLOAD (SNAP_PARASITE_MAX_TIMERS * 4u)
#define SNAP_PARASITE_NSIG 64u

enum snap_parasite_cmd_id {
  SNAP_PARASITE_CMD_GET_SIGACTIONS = 1,
  SNAP_PARASITE_CMD_GET_THREAD_STATE = 2,
  SNAP_PARASITE_CMD_GET_ITIMERS = 3, /* payload: int32 POSIX timer ids */
  SNAP_PARASITE_CMD_GET_MISC = 4,
  SNAP_PARASITE_CMD_PEEK_PIPE = 5, /* arg[0] = pipe read fd, arg[1] = max bytes */
  SNAP_PARASITE_CMD_FINI = 6,
};

/* host -> blob */
struct snap_parasite_cmd {
  uint32_t magic;       /* SNAP_PARASITE_MAGIC */
  uint16_t version;     /* SNAP_PARASITE_VERSION */
  uint16_t cmd;         /* enum snap_parasite_cmd_id */
  uint32_t seq;         /* echoed in the reply */
  uint32_t payload_len; /* bytes following; <= SNAP_PARASITE_MAX_CMD_PAYLOAD */
  uint64_t arg[2];
};

/* blob -> host */
struct snap_parasite_reply {
  uint32_t magic;
  uint16_t version;
  uint16_t cmd;
  uint32_t seq;
  int32_t status;       /* 0 on success, -errno on failure (then no payload) */
  uint64_t payload_len; /* bytes following */
};

/* GET_SIGACTIONS payload: act[i] describes signal i + 1. */
struct snap_parasite_sigaction {
  uint64_t handler;
  uint64_t flags;
  uint64_t restorer;
  uint64_t mask;
  int32_t status; /* 0, or -errno (SIGKILL/SIGSTOP: -EINVAL, not queried) */
  uint32_t pad;
};
struct snap_parasite_sigactions {
  struct snap_parasite_sigaction act[SNAP_PARASITE_NSIG];
};

/* GET_THREAD_STATE payload (also the result of the per-thread entry). */
/* The NUMA nodes a thread's memory policy is read for (get_mempolicy's
 * maxnode; a machine with more nodes gets EINVAL, and no policy is read). */
#define SNAP_PARASITE_MEMPOLICY_WORDS 8
struct snap_parasite_thread_state {
  uint64_t ss_sp;
  uint64_t ss_size;
  int32_t ss_flags;
  int32_t sigaltstack_status;
  uint64_t clear_child_tid;
  int32_t tid_address_status; /* -EINVAL without CONFIG_CHECKPOINT_RESTORE */
  int32_t tid;                /* gettid() of the thread that ran it */
  char comm[16];              /* PR_GET_NAME, NUL-terminated */
  int32_t comm_status;
  int32_t mempolicy_status;   /* of get_mempolicy (0: the two below are valid) */
  int32_t mempolicy_mode;     /* MPOL_* with its flags (MPOL_F_STATIC_NODES ...) */
  int32_t pad;
  uint64_t mempolicy_nodes[SNAP_PARASITE_MEMPOLICY_WORDS]; /* nodemask, nodes 0-511 */
};

struct snap_parasite_timeval_pair { /* struct itimerval, 64-bit */
  int64_t interval_sec, interval_usec;
  int64_t value_sec, value_usec;
};
struct snap_parasite_posix_timer {
  int32_t id;
  int32_t status;  /* of timer_gettime; overrun is valid only when 0 */
  int32_t overrun; /* timer_getoverrun */
  int32_t pad;
  int64_t interval_sec, interval_nsec;
  int64_t value_sec, value_nsec;
};
/* GET_ITIMERS payload: this, then n_posix snap_parasite_posix_timer. */
struct snap_parasite_itimers {
  struct snap_parasite_timeval_pair itimer[3]; /* REAL, VIRTUAL, PROF */
  int32_t itimer_status[3];
  uint32_t n_posix;
};

/* GET_MISC payload */
struct snap_parasite_misc {
  int32_t pdeathsig;
  int32_t pdeathsig_status;
  int32_t dumpable; /* PR_GET_DUMPABLE result, or -errno */
  uint32_t umask;
  int32_t child_subreaper; /* PR_GET_CHILD_SUBREAPER, valid when status is 0 */
  int32_t child_subreaper_status;
  /* membarrier registrations of the process, as the REGISTER commands that
   * made them (MEMBARRIER_CMD_GET_REGISTRATIONS): ..._GLOBAL_EXPEDITED (4),
   * ..._PRIVATE_EXPEDITED (16), ..._SYNC_CORE (64), ..._RSEQ (256); on
   * kernels before 6.3 the private ones, found by trying each barrier,
   * which fails with EPERM when not registered */
  uint32_t membarrier;
  uint32_t pad;
};

/* PEEK_PIPE payload: this, then `copied` bytes. copied < available means the
 * data did not fit (max bytes, or pipe capacity); the host must treat that as
 * an incomplete dump. */
struct snap_parasite_pipe_peek {
  uint64_t available; /* FIONREAD on the target's fd */
  uint64_t copied;
};

/*
 * Parameters the host writes into the blob's `snap_parasite_args` symbol
 * before starting it.
 */
struct snap_parasite_args {
  uint32_t magic;   /* SNAP_PARASITE_MAGIC, else the blob refuses to run */
  uint16_t version; /* SNAP_PARASITE_VERSION */
  uint16_t addr_len; /* length of `addr` used when sock_fd < 0 */
  int32_t sock_fd;   /* connected socket in the target, or -1 (then the
                        blob writes here the one it connects) */
  uint32_t pad;
  uint8_t addr[112]; /* struct sockaddr_un to connect() when sock_fd < 0 */
  /* Value of rsp for rt_sigreturn: address of the frame's ucontext (the
   * frame's start + 8). 0: no frame; the loop returns to its caller instead. */
  uint64_t sigreturn_sp;
};

/* Per-thread one-shot entry (snap_parasite_thread_entry), called with rdi
 * pointing at a slot of the thread's own, rsp at that slot's end (the entry's
 * stack, 16-aligned): the host fills `args`, the blob writes `result`, then
 * sets `done`. The host puts the slots after the blob's image in its
 * mapping, one per thread, so all the threads of a process run the entry at
 * once, without system-call stops. */
struct snap_parasite_thread_args {
  uint32_t magic;
  int32_t wait_fd;       /* >= 0: once done, wait until the peer of this
                            socket (the service's, snap's end) hangs up:
                            the host stops the thread there and puts it
                            back itself; if snap dies, its end closes and
                            the thread returns to its own context */
  uint64_t sigreturn_sp; /* as above; 0: trap with int3 when done */
};
struct snap_parasite_thread_slot {
  struct snap_parasite_thread_args args;
  struct snap_parasite_thread_state result;
  uint32_t done; /* 1 once `result` is written */
  uint32_t left; /* 1 just before the entry's rt_sigreturn: the thread is
                    on its way back to its own code (snap died or hung up) */
};
#define SNAP_PARASITE_THREAD_SLOT_SIZE 4096u

/* Entry point and data symbol names, for the host's symbol lookup. */
#define SNAP_PARASITE_SYM_SERVICE "snap_parasite_service"
#define SNAP_PARASITE_SYM_TRAP_ENTRY "snap_parasite_trap_entry"
#define SNAP_PARASITE_SYM_THREAD_ENTRY "snap_parasite_thread_entry"
#define SNAP_PARASITE_SYM_ARGS "snap_parasite_args"
#define SNAP_PARASITE_SYM_RELOC_CHECK "snap_parasite_reloc_check"

/* The layout is ABI between two separately compiled programs: pin it. */
#ifdef __cplusplus
#define SNAP_PARASITE_ASSERT_SIZE(type, n) static_assert(sizeof(struct type) == (n), #type)
#else
#define SNAP_PARASITE_ASSERT_SIZE(type, n) _Static_assert(sizeof(struct type) == (n), #type)
#endif
SNAP_PARASITE_ASSERT_SIZE(snap_parasite_cmd, 32);
SNAP_PARASITE_ASSERT_SIZE(snap_parasite_reply, 24);
SNAP_PARASITE_ASSERT_SIZE(snap_parasite_sigaction, 40);
SNAP_PARASITE_ASSERT_SIZE(snap_parasite_sigactions, 40 * 64);
SNAP_PARASITE_ASSERT_SIZE(snap_parasite_thread_state, 136);
SNAP_PARASITE_ASSERT_SIZE(snap_parasite_timeval_pair, 32);
SNAP_PARASITE_ASSERT_SIZE(snap_parasite_posix_timer, 48);
SNAP_PARASITE_ASSERT_SIZE(snap_parasite_itimers, 112);
SNAP_PARASITE_ASSERT_SIZE(snap_parasite_misc, 32);
SNAP_PARASITE_ASSERT_SIZE(snap_parasite_pipe_peek, 16);
SNAP_PARASITE_ASSERT_SIZE(snap_parasite_args, 136);
SNAP_PARASITE_ASSERT_SIZE(snap_parasite_thread_args, 16);
SNAP_PARASITE_ASSERT_SIZE(snap_parasite_thread_slot, 160);
#undef SNAP_PARASITE_ASSERT_SIZE

#endif /* SNAP_PARASITE_PROTOCOL_H */
