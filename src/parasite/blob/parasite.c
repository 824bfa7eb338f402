/*
 * The parasite: freestanding code snap maps into a stopped target and runs
 * there to ask the kernel things only the process itself can ask (signal
 * dispositions, per-thread sigaltstack / clear_child_tid, timers, umask, the
 * unread content of its pipes).
 *
 * No libc, no dynamic symbols, no absolute addresses except through
 * R_X86_64_RELATIVE relocations the host applies. Everything is hidden so
 * the link produces only RELATIVE relocations. See ../README.md for the
 * self-healing design (return to the thread's own context by rt_sigreturn
 * when the controlling snap disappears).
 */
#include <stddef.h>
#include <stdint.h>

#include "parasite/protocol.h"

#pragma GCC visibility push(hidden)

/* ---- raw system calls (x86_64) ---------------------------------------- */

enum {
  NR_read = 0, NR_write = 1, NR_close = 3, NR_rt_sigaction = 13,
  NR_poll = 7, NR_rt_sigreturn = 15, NR_ioctl = 16, NR_socket = 41, NR_connect = 42,
  NR_sendto = 44, NR_recvfrom = 45, NR_getitimer = 36, NR_fcntl = 72,
  NR_umask = 95, NR_sigaltstack = 131, NR_prctl = 157, NR_gettid = 186,
  NR_timer_gettime = 224, NR_timer_getoverrun = 225, NR_get_mempolicy = 239, NR_tee = 276,
  NR_pipe2 = 293, NR_membarrier = 324,
};

enum {
  E_INTR = 4, E_BADF = 9, E_AGAIN = 11, E_INVAL = 22, E_2BIG = 7, E_IO = 5,
  E_NOEXEC = 8, E_PROTONOSUPPORT = 93, E_PROTO = 71, E_PIPE = 32,
};

static inline long sys6(long n, long a, long b, long c, long d, long e, long f) {
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  long ret;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "0"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
}
#define sys0(n) sys6((n), 0, 0, 0, 0, 0, 0)
#define sys1(n, a) sys6((n), (long)(a), 0, 0, 0, 0, 0)
#define sys2(n, a, b) sys6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define sys3(n, a, b, c) sys6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define sys4(n, a, b, c, d) sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)

/* The compiler may emit calls to these for struct copies / zeroing. */
void* memset(void* d, int c, size_t n) {
  unsigned char* p = d;
  while (n--) *p++ = (unsigned char)c;
  return d;
}
void* memcpy(void* d, const void* s, size_t n) {
  unsigned char* p = d;
  const unsigned char* q = s;
  while (n--) *p++ = *q++;
  return d;
}

/* ---- memory the host fills / reads --------------------------------------- */

struct snap_parasite_args snap_parasite_args;

/* Holds its own address once the host applied relocations; the blob refuses
 * to use its (relocated) dispatch table otherwise. volatile: the compiler
 * must load it, not fold the initializer. */
void* volatile snap_parasite_reloc_check = (void*)&snap_parasite_reloc_check;

#define MAIN_STACK_SIZE 32768
__attribute__((aligned(16), used)) unsigned char snap_parasite_main_stack[MAIN_STACK_SIZE];

static unsigned char io_buf[16384];
static unsigned char cmd_payload[SNAP_PARASITE_MAX_CMD_PAYLOAD];
static unsigned char reply_buf[sizeof(struct snap_parasite_itimers) +
                               SNAP_PARASITE_MAX_TIMERS * sizeof(struct snap_parasite_posix_timer)];

/* ---- entry points (asm) ---------------------------------------------------
 * snap_parasite_trap_entry: the host points rip here (any rsp). Switches to
 * the blob's stack and serves commands; when the service returns (FINI with
 * no sigreturn frame, or a setup error), traps with int3 forever.
 * snap_parasite_thread_entry: one-shot per-thread state collection; the host
 * points rdi at the thread's slot and rsp at its end (protocol.h); ends in
 * rt_sigreturn (if a frame was given) or int3.
 */
long snap_parasite_service(struct snap_parasite_args* a);
void snap_parasite_thread_main(struct snap_parasite_thread_slot* slot);

__asm__(
    ".pushsection .text.entry,\"ax\",@progbits\n"
    ".globl snap_parasite_trap_entry\n"
    ".hidden snap_parasite_trap_entry\n"
    ".type snap_parasite_trap_entry,@function\n"
    "snap_parasite_trap_entry:\n"
    "  lea snap_parasite_main_stack+32768(%rip), %rsp\n"
    "  lea snap_parasite_args(%rip), %rdi\n"
    "  call snap_parasite_service\n"
    "1: int3\n"
    "  jmp 1b\n"
    ".size snap_parasite_trap_entry, .-snap_parasite_trap_entry\n"
    ".globl snap_parasite_thread_entry\n"
    ".hidden snap_parasite_thread_entry\n"
    ".type snap_parasite_thread_entry,@function\n"
    "snap_parasite_thread_entry:\n"
    "  and $-16, %rsp\n"
    "  call snap_parasite_thread_main\n"
    "2: int3\n"
    "  jmp 2b\n"
    ".size snap_parasite_thread_entry, .-snap_parasite_thread_entry\n"
    ".popsection\n");

/* Returns to the context saved in the frame whose ucontext is at `sp`.
 * Never returns: a bad frame makes the kernel raise SIGSEGV. */
__attribute__((noreturn)) static void sigreturn_to(uint64_t sp) {
  __asm__ volatile(
      "mov %0, %%rsp\n"
      "mov %1, %%eax\n"
      "syscall\n"
      "3: int3\n"
      "jmp 3b\n"
      :
      : "r"(sp), "i"(NR_rt_sigreturn)
      : "memory");
  __builtin_unreachable();
}

/* ---- socket I/O ---------------------------------------------------------- */

#define MSG_NOSIGNAL_ 0x4000

/* 0 when all n bytes moved, -errno (or -EPIPE on EOF) otherwise. */
static long read_full(int fd, void* buf, size_t n) {
  unsigned char* p = buf;
  while (n) {
    long r = sys6(NR_recvfrom, fd, (long)p, (long)n, 0, 0, 0);
    if (r == -E_INTR) continue;
    if (r == 0) return -E_PIPE;
    if (r < 0) {
      /* not a socket (e.g. a pipe the host chose): fall back to read */
      if (r == -88 /* ENOTSOCK */) r = sys3(NR_read, fd, p, n);
      if (r == 0) return -E_PIPE;
      if (r < 0) return r;
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static long write_full(int fd, const void* buf, size_t n) {
  const unsigned char* p = buf;
  while (n) {
    long r = sys6(NR_sendto, fd, (long)p, (long)n, MSG_NOSIGNAL_, 0, 0);
    if (r == -88 /* ENOTSOCK */) r = sys3(NR_write, fd, p, n);
    if (r == -E_INTR) continue;
    if (r <= 0) return r ? r : -E_PIPE;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

/* Sends the reply header announcing `total` payload bytes, then the first
 * `len` of them from `payload`; the caller streams the rest. */
static long send_reply_head(int fd, const struct snap_parasite_cmd* c, long status,
                            const void* payload, uint64_t len, uint64_t total) {
  struct snap_parasite_reply r;
  r.magic = SNAP_PARASITE_MAGIC;
  r.version = SNAP_PARASITE_VERSION;
  r.cmd = c->cmd;
  r.seq = c->seq;
  r.status = (int32_t)(status < 0 ? status : 0);
  r.payload_len = status < 0 ? 0 : total;
  long e = write_full(fd, &r, sizeof(r));
  if (e == 0 && status >= 0 && len && payload) e = write_full(fd, payload, len);
  return e;
}

static long send_reply(int fd, const struct snap_parasite_cmd* c, long status,
                       const void* payload, uint64_t len) {
  return send_reply_head(fd, c, status, payload, len, len);
}

/* ---- commands -------------------------------------------------------------
 * Each handler sends its own reply; it returns 0 to keep serving, or -errno
 * when the connection is unusable (then the loop ends as if the controller
 * had gone away). */

typedef long (*handler_fn)(int sock, const struct snap_parasite_cmd* c);

struct k_sigaction {
  uint64_t handler, flags, restorer, mask;
};

static long cmd_get_sigactions(int sock, const struct snap_parasite_cmd* c) {
  struct snap_parasite_sigactions* out = (struct snap_parasite_sigactions*)reply_buf;
  _Static_assert(sizeof(reply_buf) >= sizeof(*out), "reply_buf too small");
  for (unsigned i = 0; i < SNAP_PARASITE_NSIG; i++) {
    unsigned sig = i + 1;
    struct snap_parasite_sigaction* a = &out->act[i];
    memset(a, 0, sizeof(*a));
    if (sig == 9 || sig == 19) { /* SIGKILL, SIGSTOP: fixed, not queryable */
      a->status = -E_INVAL;
      continue;
    }
    struct k_sigaction k;
    memset(&k, 0, sizeof(k));
    long r = sys4(NR_rt_sigaction, sig, 0, &k, 8);
    a->status = (int32_t)r;
    if (r == 0) {
      a->handler = k.handler;
      a->flags = k.flags;
      a->restorer = k.restorer;
      a->mask = k.mask;
    }
  }
  return send_reply(sock, c, 0, out, sizeof(*out));
}

static void collect_thread_state(struct snap_parasite_thread_state* s) {
  struct {
    uint64_t sp;
    int32_t flags;
    int32_t pad;
    uint64_t size;
  } ss;
  memset(&ss, 0, sizeof(ss));
  memset(s, 0, sizeof(*s));
  long r = sys2(NR_sigaltstack, 0, &ss);
  s->sigaltstack_status = (int32_t)r;
  if (r == 0) {
    s->ss_sp = ss.sp;
    s->ss_flags = ss.flags;
    s->ss_size = ss.size;
  }
  uint64_t tid_addr = 0;
  r = sys2(NR_prctl, 40 /* PR_GET_TID_ADDRESS */, &tid_addr);
  s->tid_address_status = (int32_t)(r < 0 ? r : 0);
  if (r >= 0) s->clear_child_tid = tid_addr;
  s->tid = (int32_t)sys0(NR_gettid);
  r = sys2(NR_prctl, 16 /* PR_GET_NAME */, s->comm);
  s->comm_status = (int32_t)(r < 0 ? r : 0);
  /* Its NUMA memory policy: a thread may have one of its own (libnuma's
   * numa_set_membind or numa_set_preferred in a worker). */
  int mode = 0;
  r = sys6(NR_get_mempolicy, (long)&mode, (long)s->mempolicy_nodes,
           SNAP_PARASITE_MEMPOLICY_WORDS * 64, 0, 0, 0);
  s->mempolicy_status = (int32_t)r;
  s->mempolicy_mode = r == 0 ? mode : 0;
}

static long cmd_get_thread_state(int sock, const struct snap_parasite_cmd* c) {
  struct snap_parasite_thread_state s;
  collect_thread_state(&s);
  return send_reply(sock, c, 0, &s, sizeof(s));
}

static long cmd_get_itimers(int sock, const struct snap_parasite_cmd* c) {
  if (c->payload_len % 4) return send_reply(sock, c, -E_INVAL, 0, 0);
  uint32_t n = c->payload_len / 4;
  struct snap_parasite_itimers* out = (struct snap_parasite_itimers*)reply_buf;
  struct snap_parasite_posix_timer* pt = (struct snap_parasite_posix_timer*)(out + 1);
  memset(out, 0, sizeof(*out));
  for (int which = 0; which < 3; which++) {
    int64_t tv[4] = {0, 0, 0, 0};
    long r = sys2(NR_getitimer, which, tv);
    out->itimer_status[which] = (int32_t)r;
    if (r == 0) {
      out->itimer[which].interval_sec = tv[0];
      out->itimer[which].interval_usec = tv[1];
      out->itimer[which].value_sec = tv[2];
      out->itimer[which].value_usec = tv[3];
    }
  }
  out->n_posix = n;
  for (uint32_t i = 0; i < n; i++) {
    int32_t id;
    memcpy(&id, cmd_payload + 4 * i, 4);
    struct snap_parasite_posix_timer* t = &pt[i];
    memset(t, 0, sizeof(*t));
    t->id = id;
    int64_t ts[4] = {0, 0, 0, 0};
    long r = sys2(NR_timer_gettime, id, ts);
    t->status = (int32_t)r;
    if (r == 0) {
      t->interval_sec = ts[0];
      t->interval_nsec = ts[1];
      t->value_sec = ts[2];
      t->value_nsec = ts[3];
      long o = sys1(NR_timer_getoverrun, id);
      if (o < 0) t->status = (int32_t)o;
      else t->overrun = (int32_t)o;
    }
  }
  return send_reply(sock, c, 0, out, sizeof(*out) + n * sizeof(*pt));
}

static long cmd_get_misc(int sock, const struct snap_parasite_cmd* c) {
  struct snap_parasite_misc m;
  memset(&m, 0, sizeof(m));
  int sig = 0;
  long r = sys2(NR_prctl, 2 /* PR_GET_PDEATHSIG */, &sig);
  m.pdeathsig_status = (int32_t)r;
  m.pdeathsig = r == 0 ? sig : 0;
  m.dumpable = (int32_t)sys1(NR_prctl, 3 /* PR_GET_DUMPABLE */);
  long old = sys1(NR_umask, 0);
  sys1(NR_umask, old);
  m.umask = (uint32_t)old;
  int reaper = 0;
  r = sys2(NR_prctl, 37 /* PR_GET_CHILD_SUBREAPER */, &reaper);
  m.child_subreaper_status = (int32_t)r;
  m.child_subreaper = r == 0 ? reaper : 0;
  /* MEMBARRIER_CMD_GET_REGISTRATIONS (Linux 6.3); before it, each private
   * expedited barrier, which fails unless registered: (barrier, the
   * registration it needs) */
  long regs = sys3(NR_membarrier, 512, 0, 0);
  if (regs >= 0) {
    m.membarrier = (uint32_t)regs;
  } else {
    static const uint32_t barriers[3][2] = {{8, 16}, {32, 64}, {128, 256}};
    for (int i = 0; i < 3; i++)
      if (sys3(NR_membarrier, barriers[i][0], 0, 0) == 0) m.membarrier |= barriers[i][1];
  }
  return send_reply(sock, c, 0, &m, sizeof(m));
}

static long cmd_peek_pipe(int sock, const struct snap_parasite_cmd* c) {
  if (c->arg[0] > 0x7fffffff) return send_reply(sock, c, -E_BADF, 0, 0);
  int fd = (int)c->arg[0];
  uint64_t max = c->arg[1];
  long cap = sys2(NR_fcntl, fd, 1032 /* F_GETPIPE_SZ */);
  if (cap < 0) return send_reply(sock, c, cap, 0, 0);
  int avail = 0;
  long r = sys3(NR_ioctl, fd, 0x541B /* FIONREAD */, &avail);
  if (r < 0) return send_reply(sock, c, r, 0, 0);

  struct snap_parasite_pipe_peek pk;
  pk.available = (uint64_t)avail;
  pk.copied = 0;
  int p[2] = {-1, -1};
  if (avail > 0 && max > 0) {
    r = sys2(NR_pipe2, p, 02000000 /* O_CLOEXEC */);
    if (r < 0) return send_reply(sock, c, r, 0, 0);
    /* Same capacity as the source, so tee can duplicate every buffer; if
     * this is refused (pipe-max-size), copied < available tells the host. */
    sys3(NR_fcntl, p[1], 1031 /* F_SETPIPE_SZ */, cap);
    uint64_t want = max < (uint64_t)avail ? max : (uint64_t)avail;
    long t = sys4(NR_tee, fd, p[1], want, 2 /* SPLICE_F_NONBLOCK */);
    if (t < 0 && t != -E_AGAIN) {
      sys1(NR_close, p[0]);
      sys1(NR_close, p[1]);
      return send_reply(sock, c, t, 0, 0);
    }
    pk.copied = t > 0 ? (uint64_t)t : 0;
  }
  long e = send_reply_head(sock, c, 0, &pk, sizeof(pk), sizeof(pk) + pk.copied);
  /* payload continues: pk.copied bytes straight from our pipe */
  uint64_t left = e == 0 ? pk.copied : 0;
  while (left) {
    size_t chunk = left < sizeof(io_buf) ? left : sizeof(io_buf);
    long n = sys3(NR_read, p[0], io_buf, chunk);
    if (n == -E_INTR) continue;
    if (n <= 0) { /* cannot happen: the bytes are in our own pipe */
      e = -E_IO;
      break;
    }
    e = write_full(sock, io_buf, (size_t)n);
    if (e) break;
    left -= (uint64_t)n;
  }
  if (p[0] >= 0) sys1(NR_close, p[0]);
  if (p[1] >= 0) sys1(NR_close, p[1]);
  return e;
}

/* Indexed by command id; its entries are RELATIVE relocations. */
static handler_fn const handlers[] = {
    0,
    cmd_get_sigactions,
    cmd_get_thread_state,
    cmd_get_itimers,
    cmd_get_misc,
    cmd_peek_pipe,
};

/* ---- the loop -------------------------------------------------------------- */

static void close_fd(int fd) {
  if (fd >= 0) sys1(NR_close, fd);
}

/* Serves commands on the controller's socket. With a sigreturn frame
 * (a->sigreturn_sp != 0) it never returns: both FINI and the loss of the
 * controller end in rt_sigreturn to the thread's original context. Without
 * one it returns 0 after FINI and -errno otherwise. */
long snap_parasite_service(struct snap_parasite_args* a) {
  if (a->magic != SNAP_PARASITE_MAGIC || a->version != SNAP_PARASITE_VERSION)
    return -E_INVAL; /* args not written: nothing here can be trusted */
  long result = 0;
  int sock = a->sock_fd;
  if (snap_parasite_reloc_check != (void*)&snap_parasite_reloc_check) {
    result = -E_NOEXEC;
    goto out;
  }
  if (sock < 0) {
    if (a->addr_len == 0 || a->addr_len > sizeof(a->addr)) {
      result = -E_INVAL;
      goto out;
    }
    sock = (int)sys3(NR_socket, 1 /* AF_UNIX */, 1 /* SOCK_STREAM */ | 02000000, 0);
    if (sock < 0) {
      result = sock;
      goto out;
    }
    long r = sys3(NR_connect, sock, a->addr, a->addr_len);
    if (r < 0) {
      result = r;
      goto out;
    }
    a->sock_fd = sock; /* for a host that closes it itself (see FINI) */
  }

  for (;;) {
    struct snap_parasite_cmd c;
    long r = read_full(sock, &c, sizeof(c));
    if (r) {
      result = r; /* EOF or error: the controller is gone */
      break;
    }
    /* Consume any payload first so the stream stays in step. */
    int too_big = c.payload_len > sizeof(cmd_payload);
    uint32_t left = c.payload_len;
    unsigned char* dst = too_big ? io_buf : cmd_payload;
    size_t room = too_big ? sizeof(io_buf) : sizeof(cmd_payload);
    while (left) {
      size_t chunk = left < room ? left : room;
      r = read_full(sock, dst, chunk);
      if (r) break;
      left -= (uint32_t)chunk;
    }
    if (r) {
      result = r;
      break;
    }
    if (c.magic != SNAP_PARASITE_MAGIC) {
      r = send_reply(sock, &c, -E_PROTO, 0, 0);
    } else if (c.version != SNAP_PARASITE_VERSION) {
      r = send_reply(sock, &c, -E_PROTONOSUPPORT, 0, 0);
    } else if (too_big) {
      r = send_reply(sock, &c, -E_2BIG, 0, 0);
    } else if (c.cmd == SNAP_PARASITE_CMD_FINI) {
      r = send_reply(sock, &c, 0, 0, 0);
      /* Then wait for the host to hang up. A host that runs this thread
       * without system-call stops stops it here and puts it back itself
       * (closing a->sock_fd); with no host left, EOF ends it as any loss
       * of the controller does. */
      if (!r) {
        unsigned char b;
        while (read_full(sock, &b, 1) == 0) {
        }
      }
      result = 0;
      break;
    } else if (c.cmd >= sizeof(handlers) / sizeof(handlers[0]) || !handlers[c.cmd]) {
      r = send_reply(sock, &c, -E_INVAL, 0, 0);
    } else {
      r = handlers[c.cmd](sock, &c);
    }
    if (r) {
      result = r;
      break;
    }
  }

out:
  close_fd(sock);
  if (a->sigreturn_sp) sigreturn_to(a->sigreturn_sp);
  return result;
}

void snap_parasite_thread_main(struct snap_parasite_thread_slot* slot) {
  if (slot->args.magic != SNAP_PARASITE_MAGIC) return; /* -> int3 */
  collect_thread_state(&slot->result);
  __atomic_store_n(&slot->done, 1u, __ATOMIC_RELEASE);
  if (slot->args.wait_fd >= 0) {
    /* Until snap's end of the socket closes (it died: back to our own
     * context below). Normally snap stops the thread in here and restores
     * it; snap's commands to the service make the socket readable, which
     * is not asked for. All signals are blocked: no EINTR. */
    struct {
      int32_t fd;
      int16_t events, revents;
    } p = {slot->args.wait_fd, 0x2000 /* POLLRDHUP */, 0};
    while (sys3(NR_poll, &p, 1, -1) == 0) {
    }
  }
  /* Snap reads this once it has stopped the thread (rather than where the
   * thread stopped): set here, the thread may still be in the blob, which
   * snap then takes for gone back, and lets go to finish the way back. */
  __atomic_store_n(&slot->left, 1u, __ATOMIC_RELEASE);
  if (slot->args.sigreturn_sp) sigreturn_to(slot->args.sigreturn_sp);
}

#pragma GCC visibility pop
