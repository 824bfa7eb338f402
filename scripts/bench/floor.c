/* What this machine charges for the parts of a freeze that a checkpointer
 * built a given way cannot avoid, with none of its own work in it: the
 * least a freeze of such a job could be here, that way. scripts/bench/bench
 * runs it right after the rows it explains (same run, same machine).
 *
 * Usage: bench-floor threads N [ROUNDS]
 *          a process of 1 + N threads: the main one sleeps 1 ms in a loop
 *          and measures its longest stall (as bench-workload does), the N
 *          others sleep 100 ms in a loop. Each round, a controller thread
 *          of the process makes every one of them run code of its own and
 *          wait (a signal handler that reads the two things only a thread
 *          itself can tell: its sigaltstack and its clear-child-tid
 *          address), forks once all wait (the copy-on-write snapshot), then
 *          lets the main thread go, then the others: stopping the threads,
 *          code in each and a fork, done the cheapest way there is, from
 *          inside, with no ptrace stop or round trip and nothing else read.
 *        bench-floor ptrace N [ROUNDS]
 *          the same job as a child process, stopped from outside with
 *          ptrace each round: every thread seized, interrupted and waited
 *          for; then each made to run one system call, all at once
 *          (prctl(PR_GET_TID_ADDRESS): its clear-child-tid address, which
 *          only the thread can tell) and put back; then all detached, main
 *          thread first. That is the least a ptrace checkpointer does to
 *          such a job, with nothing else read and no snapshot.
 *        bench-floor memory MIB [ROUNDS]
 *          the threads mode's job with no sleeping thread and MIB MiB of
 *          private anonymous memory, every page written again before each
 *          round (as a job that has just written its data: every page's
 *          table entry writable, the fork's dearest case): the main thread
 *          parked by a signal, a fork by the controller, the main thread
 *          let go. The fork write-protects every page of the process; what
 *          the first return to user mode after it pays for that (on a
 *          virtual machine with shadow page tables, a sizeable part) is in
 *          fork_ms: the forking thread returns first.
 *        bench-floor memory-wp MIB [ROUNDS]
 *          the memory mode with the fork replaced by the other way to
 *          snapshot memory copy-on-write: the data registered with a
 *          userfaultfd and write-protected (UFFDIO_WRITEPROTECT), which a
 *          tool would then copy page by page as the job writes. Exit
 *          status 3 where this machine does not let the process use
 *          userfaultfd (vm.unprivileged_userfaultfd 0 and not root).
 *        bench-floor maps N [ROUNDS]
 *          N separate one-page private anonymous mappings, each touched
 *          (as bench-workload maps=N lays them out); each round reads
 *          /proc/self/maps whole, in large reads into a buffer already
 *          used (how a tool learns the mappings while the job is stopped,
 *          the cheapest way), and forks (the snapshot).
 * Prints one line of KEY=VALUE, medians over the rounds (default 7), times
 * in ms:
 *   floor threads=N rounds=R park_ms=.. fork_ms=.. gap_ms=.. all_ms=..
 *     park: from the first signal until every thread waits; fork; gap: the
 *     main thread's own longest stall; all: from the first signal until the
 *     last thread was let go
 *   floor memory=MIB rounds=R park_ms=.. fork_ms=.. gap_ms=.. all_ms=..
 *   floor memory-wp=MIB rounds=R park_ms=.. wp_ms=.. gap_ms=.. all_ms=..
 *   floor ptrace threads=N rounds=R stop_ms=.. call_ms=.. detach_ms=.. gap_ms=..
 *   floor maps=N rounds=R maps_ms=.. fork_ms=.. sum_ms=..
 * Exit status: 2 bad arguments, 1 a failure of the machine (named), 3 the
 * mode's mechanism not available here (named). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <fcntl.h>
#include <elf.h>
#include <linux/futex.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static long futex(atomic_int *addr, int op, int val) {
  return syscall(SYS_futex, addr, op, val, NULL, NULL, 0);
}

static void wait_while(atomic_int *addr, int val) {
  while (atomic_load(addr) == val) futex(addr, FUTEX_WAIT_PRIVATE, val);
}

/* ---- the job of the threads and ptrace modes ------------------------- */

/* What the main thread measures, shared with a controller thread or (ptrace
 * mode) with the parent process. */
struct gap_watch {
  atomic_llong gap_us; /* its longest stall since the last reset */
  atomic_int reset;    /* set to have gap_us cleared */
  atomic_int stop;     /* set to end the job */
};

static int nthreads;
static pid_t *tids; /* [0]: the main thread */
static atomic_int started;

static void *sleeper(void *arg) {
  tids[(long)arg] = (pid_t)syscall(SYS_gettid);
  atomic_fetch_add(&started, 1);
  for (;;) {
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

/* N threads more, each sleeping 100 ms in a loop (bench-workload threads=N). */
static void start_sleepers(int n) {
  nthreads = n;
  tids = calloc(n + 1, sizeof *tids);
  if (!tids) die("bench-floor: calloc");
  tids[0] = (pid_t)syscall(SYS_gettid);
  for (long i = 1; i <= n; i++) {
    pthread_t t;
    if (pthread_create(&t, NULL, sleeper, (void *)i)) die("bench-floor: pthread_create");
    pthread_detach(t);
  }
  while (atomic_load(&started) < n) sched_yield();
}

/* The main thread's loop: 1 ms sleeps, the longest gap noted. */
static void watch_gaps(struct gap_watch *w) {
  double last = now_ms();
  while (!atomic_load(&w->stop)) {
    struct timespec ms = {0, 1000 * 1000};
    nanosleep(&ms, NULL);
    double t = now_ms();
    if (atomic_exchange(&w->reset, 0)) atomic_store(&w->gap_us, 0);
    long long us = (long long)((t - last) * 1e3);
    if (us > atomic_load(&w->gap_us)) atomic_store(&w->gap_us, us);
    last = t;
  }
}

/* Before a round: the gap cleared, time to settle. After it: time for the
 * main thread to note its stall, returned in ms. */
static void settle(struct gap_watch *w) {
  struct timespec t = {0, 300 * 1000 * 1000};
  atomic_store(&w->reset, 1);
  nanosleep(&t, NULL);
}

static double noted_gap(struct gap_watch *w) {
  struct timespec t = {0, 300 * 1000 * 1000};
  nanosleep(&t, NULL);
  return atomic_load(&w->gap_us) / 1e3;
}

/* ---- threads: parked by a signal, in-process ------------------------- */

static atomic_int parked; /* threads in the handler, waiting */
static atomic_int go_main, go_rest;
static stack_t *altstacks;
static void **tid_addresses;

static int my_index(void) {
  pid_t me = (pid_t)syscall(SYS_gettid);
  for (int i = 0; i <= nthreads; i++)
    if (tids[i] == me) return i;
  return -1;
}

static void park(int sig) {
  (void)sig;
  int i = my_index();
  if (i >= 0) {
    sigaltstack(NULL, &altstacks[i]);
    prctl(PR_GET_TID_ADDRESS, &tid_addresses[i], 0, 0, 0);
  }
  atomic_fetch_add(&parked, 1);
  futex(&parked, FUTEX_WAKE_PRIVATE, 1);
  wait_while(i == 0 ? &go_main : &go_rest, 0);
}

/* memory mode: the data, mapped afresh and written before each round. */
static size_t data_bytes;
static char *data;
static int wp_uffd = -1; /* memory-wp mode: write-protect instead of fork */

static void open_uffd(void) {
  wp_uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
  if (wp_uffd < 0) {
    perror("bench-floor: userfaultfd (not permitted here unless root or "
           "vm.unprivileged_userfaultfd is 1)");
    exit(3);
  }
  struct uffdio_api api = {.api = UFFD_API};
  if (ioctl(wp_uffd, UFFDIO_API, &api)) die("bench-floor: UFFDIO_API");
  if (!(api.ioctls & (1ULL << _UFFDIO_REGISTER))) {
    fprintf(stderr, "bench-floor: this kernel's userfaultfd cannot register\n");
    exit(3);
  }
}

/* The snapshot taken the userfaultfd way: every page of the data made
 * read-only to the job, to be copied when it writes. */
static void write_protect_data(void) {
  struct uffdio_register r = {.range = {(unsigned long)data, data_bytes},
                              .mode = UFFDIO_REGISTER_MODE_WP};
  if (ioctl(wp_uffd, UFFDIO_REGISTER, &r)) {
    perror("bench-floor: UFFDIO_REGISTER (write-protect mode)");
    exit(3);
  }
  struct uffdio_writeprotect wp = {.range = {(unsigned long)data, data_bytes},
                                   .mode = UFFDIO_WRITEPROTECT_MODE_WP};
  if (ioctl(wp_uffd, UFFDIO_WRITEPROTECT, &wp)) die("bench-floor: UFFDIO_WRITEPROTECT");
}

static void write_data_afresh(void) {
  if (!data_bytes) return;
  if (data && munmap(data, data_bytes)) die("bench-floor: munmap");
  data = mmap(NULL, data_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) die("bench-floor: mmap");
  /* A byte written to each page by the program itself, as a job writes its
   * data: not MADV_POPULATE_WRITE, whose pages the fork write-protected far
   * more cheaply here (1 GiB: 11 ms against 27-38; likely this virtual
   * machine's shadow page tables, which hold only what the program has
   * touched itself). */
  for (size_t off = 0; off < data_bytes; off += PAGE) data[off] = 1;
}

struct park_rounds {
  int rounds;
  struct gap_watch *w;
  double *park, *fork, *gap, *all;
};

static void *park_controller(void *arg) {
  struct park_rounds *a = arg;
  for (int k = 0; k < a->rounds; k++) {
    write_data_afresh();
    settle(a->w);
    atomic_store(&parked, 0);
    atomic_store(&go_main, 0);
    atomic_store(&go_rest, 0);
    double t0 = now_ms();
    for (int i = 0; i <= nthreads; i++)
      if (syscall(SYS_tgkill, getpid(), tids[i], SIGUSR2)) die("bench-floor: tgkill");
    int n;
    while ((n = atomic_load(&parked)) <= nthreads) futex(&parked, FUTEX_WAIT_PRIVATE, n);
    double t1 = now_ms();
    pid_t child = -1;
    if (wp_uffd >= 0) {
      write_protect_data(); /* dropped with the mapping, next round */
    } else {
      child = fork();
      if (child < 0) die("bench-floor: fork");
      if (child == 0) _exit(0);
    }
    double t2 = now_ms();
    atomic_store(&go_main, 1);
    futex(&go_main, FUTEX_WAKE_PRIVATE, 1);
    atomic_store(&go_rest, 1);
    futex(&go_rest, FUTEX_WAKE_PRIVATE, nthreads);
    double t3 = now_ms();
    if (child > 0 && waitpid(child, NULL, 0) < 0) die("bench-floor: waitpid");
    a->park[k] = t1 - t0;
    a->fork[k] = t2 - t1;
    a->all[k] = t3 - t0;
    a->gap[k] = noted_gap(a->w);
  }
  atomic_store(&a->w->stop, 1);
  return NULL;
}

/* `mode` names the output line (threads, memory or memory-wp). */
static int run_threads(const char *mode, int n, int rounds, int mib) {
  data_bytes = (size_t)mib << 20;
  static struct gap_watch w;
  altstacks = calloc(n + 1, sizeof *altstacks);
  tid_addresses = calloc(n + 1, sizeof *tid_addresses);
  if (!altstacks || !tid_addresses) die("bench-floor: calloc");
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = park;
  sa.sa_flags = SA_RESTART;
  if (sigaction(SIGUSR2, &sa, NULL)) die("bench-floor: sigaction");
  start_sleepers(n);
  double park_v[rounds], fork_v[rounds], gap_v[rounds], all_v[rounds];
  struct park_rounds a = {rounds, &w, park_v, fork_v, gap_v, all_v};
  pthread_t ctl; /* not one of the threads it parks */
  if (pthread_create(&ctl, NULL, park_controller, &a)) die("bench-floor: pthread_create");
  watch_gaps(&w);
  pthread_join(ctl, NULL);
  printf("floor %s=%d rounds=%d park_ms=%.2f %s_ms=%.2f gap_ms=%.2f all_ms=%.2f\n", mode,
         mib ? mib : n, rounds, median(park_v, rounds), wp_uffd >= 0 ? "wp" : "fork",
         median(fork_v, rounds), median(gap_v, rounds), median(all_v, rounds));
  return 0;
}

/* ---- ptrace: stopped and let go from outside ------------------------- */

static int list_tasks(pid_t pid, pid_t *out, int max) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (!d) die("bench-floor: /proc/PID/task");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < max)
    if (e->d_name[0] != '.') out[n++] = atoi(e->d_name);
  closedir(d);
  for (int i = 0; i < n; i++) /* main thread first */
    if (out[i] == pid) {
      out[i] = out[0];
      out[0] = pid;
    }
  return n;
}

/* `syscall; int3`: where a stopped thread is sent to make one system call
 * and stop again. The job is a fork of this program, so it is at the same
 * address there. */
extern char floor_syscall_gadget[];
__asm__(".text\n.globl floor_syscall_gadget\nfloor_syscall_gadget:\n syscall\n int3\n");

static void set_regs(pid_t tid, struct user_regs_struct *r) {
  struct iovec io = {r, sizeof *r};
  if (ptrace(PTRACE_SETREGSET, tid, (void *)NT_PRSTATUS, &io)) die("bench-floor: PTRACE_SETREGSET");
}

/* Every stopped thread t[i] runs prctl(PR_GET_TID_ADDRESS, &slots[i]) (the
 * clear-child-tid address, which only the thread itself can tell), all at
 * once, and is put back as it was. */
static void one_call_each(const pid_t *t, int m, uint64_t *slots) {
  static struct user_regs_struct saved[4096];
  for (int i = 0; i < m; i++) {
    struct iovec io = {&saved[i], sizeof saved[i]};
    if (ptrace(PTRACE_GETREGSET, t[i], (void *)NT_PRSTATUS, &io)) die("bench-floor: PTRACE_GETREGSET");
    struct user_regs_struct call = saved[i];
    call.rip = (uint64_t)floor_syscall_gadget;
    call.orig_rax = (uint64_t)-1; /* no restart of what it was in */
    call.rax = SYS_prctl;
    call.rdi = PR_GET_TID_ADDRESS;
    call.rsi = (uint64_t)&slots[i];
    set_regs(t[i], &call);
    if (ptrace(PTRACE_CONT, t[i], NULL, NULL)) die("bench-floor: PTRACE_CONT");
  }
  for (int i = 0; i < m; i++) {
    int st;
    if (waitpid(t[i], &st, __WALL) < 0) die("bench-floor: waitpid");
    if (!WIFSTOPPED(st) || WSTOPSIG(st) != SIGTRAP) {
      fprintf(stderr, "bench-floor: thread %d stopped with status %#x, not at the int3\n", t[i], st);
      exit(1);
    }
    set_regs(t[i], &saved[i]); /* the int3's SIGTRAP is dropped at detach */
  }
}

static int run_ptrace(int n, int rounds) {
  if (n + 1 > 4096) {
    fprintf(stderr, "bench-floor: ptrace mode takes at most 4095 threads\n");
    return 2;
  }
  struct gap_watch *w = mmap(NULL, sizeof *w, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                             -1, 0);
  uint64_t *slots = calloc(n + 1, sizeof *slots); /* the job's copy is written */
  if (w == MAP_FAILED || !slots) die("bench-floor: memory");
  int ready[2];
  if (pipe(ready)) die("bench-floor: pipe");
  pid_t job = fork();
  if (job < 0) die("bench-floor: fork");
  if (job == 0) {
    close(ready[0]);
    start_sleepers(n);
    if (write(ready[1], "r", 1) != 1) _exit(1);
    close(ready[1]);
    watch_gaps(w);
    _exit(0);
  }
  close(ready[1]);
  char c;
  if (read(ready[0], &c, 1) != 1) {
    fprintf(stderr, "bench-floor: the job did not start\n");
    return 1;
  }
  pid_t *t = calloc(n + 1, sizeof *t);
  uint64_t *got = calloc(n + 1, sizeof *got);
  if (!t || !got) die("bench-floor: calloc");
  double stop_v[rounds], call_v[rounds], detach_v[rounds], gap_v[rounds];
  for (int k = 0; k < rounds; k++) {
    settle(w);
    int m = list_tasks(job, t, n + 1);
    double t0 = now_ms();
    for (int i = 0; i < m; i++)
      if (ptrace(PTRACE_SEIZE, t[i], NULL, NULL)) die("bench-floor: PTRACE_SEIZE");
    for (int i = 0; i < m; i++)
      if (ptrace(PTRACE_INTERRUPT, t[i], NULL, NULL)) die("bench-floor: PTRACE_INTERRUPT");
    for (int i = 0; i < m; i++)
      if (waitpid(t[i], NULL, __WALL) < 0) die("bench-floor: waitpid");
    double t1 = now_ms();
    one_call_each(t, m, slots);
    double t2 = now_ms();
    for (int i = 0; i < m; i++)
      if (ptrace(PTRACE_DETACH, t[i], NULL, NULL)) die("bench-floor: PTRACE_DETACH");
    double t3 = now_ms();
    stop_v[k] = t1 - t0;
    call_v[k] = t2 - t1;
    detach_v[k] = t3 - t2;
    gap_v[k] = noted_gap(w);
    /* Every thread's answer arrived (glibc gives each thread one). */
    struct iovec local = {got, (size_t)m * sizeof *got}, remote = {slots, (size_t)m * sizeof *got};
    if (process_vm_readv(job, &local, 1, &remote, 1, 0) != (ssize_t)local.iov_len)
      die("bench-floor: process_vm_readv");
    for (int i = 0; i < m; i++)
      if (!got[i]) {
        fprintf(stderr, "bench-floor: thread %d gave no clear-child-tid address\n", t[i]);
        return 1;
      }
  }
  kill(job, SIGKILL);
  waitpid(job, NULL, 0);
  printf("floor ptrace threads=%d rounds=%d stop_ms=%.2f call_ms=%.2f detach_ms=%.2f gap_ms=%.2f\n",
         n, rounds, median(stop_v, rounds), median(call_v, rounds), median(detach_v, rounds),
         median(gap_v, rounds));
  return 0;
}

/* ---- maps ------------------------------------------------------------- */

/* /proc/self/maps whole, in reads as large as the buffer: the cheapest way
 * (stdio's 4 KiB reads cost ~2x here; so does a buffer the kernel has not
 * written into before: its first write to a page of ours is dear). */
static void read_maps(char *buf, size_t cap) {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("bench-floor: /proc/self/maps");
  size_t len = 0;
  ssize_t r;
  while ((r = read(fd, buf + len, cap - len)) > 0) len += (size_t)r;
  if (r < 0) die("bench-floor: read /proc/self/maps");
  if (len == cap) {
    fprintf(stderr, "bench-floor: /proc/self/maps is over %zu bytes\n", cap);
    exit(1);
  }
  close(fd);
}

static int run_maps(int n, int rounds) {
  size_t len = 2 * (size_t)n * PAGE;
  char *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) die("bench-floor: mmap");
  for (int i = 0; i < n; i++) {
    base[2 * (size_t)i * PAGE] = (char)i;
    if (munmap(base + (2 * (size_t)i + 1) * PAGE, PAGE)) die("bench-floor: munmap");
  }
  size_t cap = (size_t)n * 128 + (1 << 20);
  /* The reader's buffer: a tool reads the maps into its own memory, which
   * the job's fork leaves writable, so here it is kept out of the fork. */
  char *buf = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED || madvise(buf, cap, MADV_DONTFORK)) die("bench-floor: mmap");
  memset(buf, 0, cap);
  read_maps(buf, cap); /* the buffer written by the kernel once before */
  double maps_v[rounds], fork_v[rounds], sum_v[rounds];
  for (int k = 0; k < rounds; k++) {
    double t0 = now_ms();
    read_maps(buf, cap);
    double t1 = now_ms();
    pid_t child = fork();
    if (child < 0) die("bench-floor: fork");
    if (child == 0) _exit(0);
    double t2 = now_ms();
    if (waitpid(child, NULL, 0) < 0) die("bench-floor: waitpid");
    maps_v[k] = t1 - t0;
    fork_v[k] = t2 - t1;
    sum_v[k] = t2 - t0;
    struct timespec settle = {0, 100 * 1000 * 1000};
    nanosleep(&settle, NULL);
  }
  printf("floor maps=%d rounds=%d maps_ms=%.2f fork_ms=%.2f sum_ms=%.2f\n", n, rounds,
         median(maps_v, rounds), median(fork_v, rounds), median(sum_v, rounds));
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: bench-floor threads|ptrace|memory|memory-wp|maps N [ROUNDS]\n");
    return 2;
  }
  int n = atoi(argv[2]);
  int rounds = argc > 3 ? atoi(argv[3]) : 7;
  if (n < 1 || rounds < 1 || rounds > 1000) {
    fprintf(stderr, "bench-floor: N and ROUNDS must be positive (ROUNDS at most 1000)\n");
    return 2;
  }
  if (!strcmp(argv[1], "threads")) return run_threads(argv[1], n, rounds, 0);
  if (!strcmp(argv[1], "memory")) return run_threads(argv[1], 0, rounds, n);
  if (!strcmp(argv[1], "memory-wp")) {
    open_uffd();
    return run_threads(argv[1], 0, rounds, n);
  }
  if (!strcmp(argv[1], "ptrace")) return run_ptrace(n, rounds);
  if (!strcmp(argv[1], "maps")) return run_maps(n, rounds);
  fprintf(stderr, "bench-floor: unknown mode %s (threads, ptrace, memory, memory-wp or maps)\n", argv[1]);
  return 2;
}
