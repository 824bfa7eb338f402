// A job whose threads sleep in calls the kernel resumes through
// restart_syscall once they were stopped and continued (SIGSTOP and
// SIGCONT, as Slurm's suspend gives; a ptrace stop): a futex wait and a
// poll with timeouts, and a nanosleep that goes on with the time left.
// Each checks what its call returns (0, a timeout, EAGAIN or EINTR: what
// the kernel may return, a signal handler having run) and exits the job
// with status 3, saying what it got, on anything else. The main thread
// prints "tick N" every INTERVAL_MS, TICKS times, then exits 0: the same
// output on every run.
// usage: restart_waits TICKS INTERVAL_MS
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int word;  // never changes: the futex waits only time out

static void fail(const char *what, long r, int err) {
  fprintf(stderr, "restart_waits: %s returned %ld (errno %d)\n", what, r, err);
  fflush(stderr);
  _exit(3);
}

static void *futex_waits(void *arg) {
  (void)arg;
  for (;;) {
    struct timespec ts = {2, 0};
    long r = syscall(SYS_futex, &word, FUTEX_WAIT | FUTEX_PRIVATE_FLAG, 0, &ts, NULL, 0);
    if (r != 0 && !(r == -1 && (errno == ETIMEDOUT || errno == EAGAIN || errno == EINTR)))
      fail("futex(FUTEX_WAIT)", r, errno);
  }
  return NULL;
}

static void *polls(void *arg) {
  (void)arg;
  for (;;) {
    int r = poll(NULL, 0, 1500);
    if (r != 0 && !(r == -1 && errno == EINTR)) fail("poll", r, errno);
  }
  return NULL;
}

static void *sleeps(void *arg) {
  (void)arg;
  for (;;) {
    struct timespec req = {1, 700000000}, rem;
    long r;
    while ((r = nanosleep(&req, &rem)) == -1 && errno == EINTR) {
      if (rem.tv_sec < 0 || rem.tv_nsec < 0 || rem.tv_nsec >= 1000000000 || rem.tv_sec > req.tv_sec)
        fail("nanosleep's time left", rem.tv_sec, 0);
      req = rem;
    }
    if (r != 0) fail("nanosleep", r, errno);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: restart_waits TICKS INTERVAL_MS\n");
    return 2;
  }
  int ticks = atoi(argv[1]), interval = atoi(argv[2]);
  void *(*fns[])(void *) = {futex_waits, polls, sleeps};
  for (int i = 0; i < 3; i++) {
    pthread_t t;
    if (pthread_create(&t, NULL, fns[i], NULL) != 0) return 1;
  }
  struct timespec pause = {interval / 1000, (long)(interval % 1000) * 1000000};
  for (int t = 1; t <= ticks; t++) {
    nanosleep(&pause, NULL);
    printf("tick %d\n", t);
    fflush(stdout);
  }
  return 0;
}
