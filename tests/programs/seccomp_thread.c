/* A job whose second thread put itself under seccomp: a dump as root saves
 * it and a restore installs it again; an ordinary user's dump refuses it
 * before anything is injected, and the job, that thread included, runs on
 * as if nothing happened.
 *
 * Usage: seccomp_thread filter|strict|tsync LIMIT INTERVAL_MS
 *
 * filter: the thread installs two filters (its leader has none), each
 *         failing getppid() with its own errno, the older with EPERM, the
 *         newer with ENOENT, which the kernel gives (the newest of equal
 *         actions wins): each round trip the thread checks getppid() fails
 *         with ENOENT, so a filter lost or installed in another order shows.
 * tsync:  the main thread installs the EPERM filter before it starts the
 *         thread, which shares it; halfway the main thread installs the
 *         ENOENT one with SECCOMP_FILTER_FLAG_TSYNC, which the kernel grants
 *         only where every thread still shares the first (else "seccomp
 *         lost: TSYNC ..."), and the thread checks getppid() fails with
 *         EPERM before and ENOENT after.
 * strict: the thread enters SECCOMP_MODE_STRICT (read, write, exit and
 *         sigreturn only): any other system call made in it kills it.
 * The main thread prints "N thread ok" LIMIT times, every INTERVAL_MS,
 * each after a round trip through the seccomp'd thread (a byte on one pipe,
 * its answer on another) and a look at that thread's seccomp mode and
 * filter count in /proc, then "DONE"; "N seccomp lost: ..." and exit 1
 * where either is not what the thread set up. A thread killed by the
 * dump's injection leaves the main thread waiting for its answer for ever.
 */
#include <linux/filter.h>
#include <errno.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int to_thread[2], from_thread[2];
static int strict, tsync;
static volatile pid_t thread_tid;

static void die(const char *what) {
  perror(what);
  exit(1);
}

/* getppid() fails with `err`, every other call is allowed. */
static long deny_getppid_flags(int err, unsigned flags);
static void deny_getppid(int err) {
  if (deny_getppid_flags(err, 0) != 0) die("seccomp filter");
}

static long deny_getppid_flags(int err, unsigned flags) {
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)err),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof code / sizeof code[0], code};
  return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

static void *echo(void *arg) {
  (void)arg;
  thread_tid = (pid_t)syscall(SYS_gettid);
  if (strict) {
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0) die("PR_SET_SECCOMP strict");
  } else if (!tsync) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("PR_SET_NO_NEW_PRIVS");
    deny_getppid(EPERM);
    deny_getppid(ENOENT);
  }
  char c = 'r';
  if (write(from_thread[1], &c, 1) != 1) syscall(SYS_exit, 2);  /* ready */
  for (;;) {
    if (read(to_thread[0], &c, 1) != 1) syscall(SYS_exit, 3);
    if (c == 'q') syscall(SYS_exit, 0);  /* strict mode allows exit, not exit_group */
    /* 'p': the newest filter fails getppid() with ENOENT; 'e': with EPERM */
    int want = c == 'e' ? EPERM : ENOENT;
    c = 'a';
    if (!strict && (syscall(SYS_getppid) != -1 || errno != want)) c = 'x';
    if (write(from_thread[1], &c, 1) != 1) syscall(SYS_exit, 4);
  }
  return NULL;
}

/* The seccomp'd thread's "Seccomp:" and "Seccomp_filters:" in /proc. */
static void read_seccomp(int *mode, int *filters) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)thread_tid);
  FILE *f = fopen(path, "r");
  if (!f) die(path);
  while (fgets(line, sizeof line, f)) {
    sscanf(line, "Seccomp: %d", mode);
    sscanf(line, "Seccomp_filters: %d", filters);
  }
  fclose(f);
}

int main(int argc, char **argv) {
  if (argc != 4 || (strcmp(argv[1], "filter") && strcmp(argv[1], "strict") &&
                    strcmp(argv[1], "tsync"))) {
    fprintf(stderr, "usage: seccomp_thread filter|strict|tsync LIMIT INTERVAL_MS\n");
    return 2;
  }
  strict = !strcmp(argv[1], "strict");
  tsync = !strcmp(argv[1], "tsync");
  long limit = atol(argv[2]), interval = atol(argv[3]);
  if (pipe(to_thread) || pipe(from_thread)) die("pipe");
  if (tsync) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("PR_SET_NO_NEW_PRIVS");
    deny_getppid(EPERM);
  }
  pthread_t t;
  if (pthread_create(&t, NULL, echo, NULL)) die("pthread_create");
  char c;
  if (read(from_thread[0], &c, 1) != 1 || c != 'r') die("thread not ready");
  for (long i = 0; i < limit; i++) {
    if (tsync && i == limit / 2) {
      long rc = deny_getppid_flags(ENOENT, SECCOMP_FILTER_FLAG_TSYNC);
      if (rc != 0) {
        printf("%ld seccomp lost: TSYNC refused (%ld): the threads no longer share a filter\n",
               i, rc);
        return 1;
      }
    }
    c = tsync && i < limit / 2 ? 'e' : 'p';
    if (write(to_thread[1], &c, 1) != 1) die("write to thread");
    if (read(from_thread[0], &c, 1) != 1) die("answer from thread");
    if (c == 'x') {
      printf("%ld seccomp lost: getppid() in the thread did not fail with ENOENT\n", i);
      return 1;
    }
    if (c != 'a') die("answer from thread");
    int mode = -1, filters = -1;
    read_seccomp(&mode, &filters);
    const int want_filters = strict ? 0 : tsync && i < limit / 2 ? 1 : 2;
    if (mode != (strict ? 1 : 2) || filters != want_filters) {
      printf("%ld seccomp lost: the thread is in mode %d with %d filter(s)\n", i, mode, filters);
      return 1;
    }
    printf("%ld thread ok\n", i);
    fflush(stdout);
    struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  c = 'q';
  if (write(to_thread[1], &c, 1) != 1) die("write q");
  pthread_join(t, NULL);
  printf("DONE\n");
  return 0;
}
