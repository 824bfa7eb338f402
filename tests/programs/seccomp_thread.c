/* A job whose second thread put itself under seccomp, which snap cannot
 * restore: the dump must refuse it before anything is injected, and the
 * job, that thread included, must run on as if nothing happened.
 *
 * Usage: seccomp_thread filter|strict LIMIT INTERVAL_MS
 *
 * filter: the thread installs a filter that allows everything (its leader
 *         has none): a restore would lose it.
 * strict: the thread enters SECCOMP_MODE_STRICT (read, write, exit and
 *         sigreturn only): any other system call made in it kills it.
 * The main thread prints "N thread ok" LIMIT times, every INTERVAL_MS,
 * each after a round trip through the seccomp'd thread (a byte on one pipe,
 * its answer on another), then "DONE". A thread killed by the dump's
 * injection leaves the main thread waiting for its answer for ever.
 */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int to_thread[2], from_thread[2];
static int strict;

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void *echo(void *arg) {
  (void)arg;
  if (strict) {
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0) die("PR_SET_SECCOMP strict");
  } else {
    struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog prog = {1, &allow};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("PR_SET_NO_NEW_PRIVS");
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) die("seccomp filter");
  }
  char c = 'r';
  if (write(from_thread[1], &c, 1) != 1) syscall(SYS_exit, 2);  /* ready */
  for (;;) {
    if (read(to_thread[0], &c, 1) != 1) syscall(SYS_exit, 3);
    if (c == 'q') syscall(SYS_exit, 0);  /* strict mode allows exit, not exit_group */
    c = 'a';
    if (write(from_thread[1], &c, 1) != 1) syscall(SYS_exit, 4);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4 || (strcmp(argv[1], "filter") && strcmp(argv[1], "strict"))) {
    fprintf(stderr, "usage: seccomp_thread filter|strict LIMIT INTERVAL_MS\n");
    return 2;
  }
  strict = !strcmp(argv[1], "strict");
  long limit = atol(argv[2]), interval = atol(argv[3]);
  if (pipe(to_thread) || pipe(from_thread)) die("pipe");
  pthread_t t;
  if (pthread_create(&t, NULL, echo, NULL)) die("pthread_create");
  char c;
  if (read(from_thread[0], &c, 1) != 1 || c != 'r') die("thread not ready");
  for (long i = 0; i < limit; i++) {
    c = 'p';
    if (write(to_thread[1], &c, 1) != 1) die("write to thread");
    if (read(from_thread[0], &c, 1) != 1 || c != 'a') die("answer from thread");
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
