/* A counter paced by a POSIX timer with SIGEV_THREAD notification: glibc
 * runs the callback on a helper thread that the timer signals directly
 * (SIGEV_THREAD_ID, its internal signal 32, blocked everywhere else). The
 * callback writes to an eventfd the main thread reads once per line. A
 * restore that aims the timer at another thread gets the job killed by
 * that signal. Usage: thread_timer LIMIT INTERVAL_MS */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static int efd;

static void tick(union sigval v) {
  (void)v;
  uint64_t one = 1;
  if (write(efd, &one, sizeof one) != sizeof one) _exit(3);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: thread_timer LIMIT INTERVAL_MS\n");
    return 2;
  }
  int limit = atoi(argv[1]);
  long ms = atol(argv[2]);
  setvbuf(stdout, NULL, _IOLBF, 0);
  efd = eventfd(0, 0);
  struct sigevent ev = {0};
  ev.sigev_notify = SIGEV_THREAD;
  ev.sigev_notify_function = tick;
  timer_t timer;
  if (efd < 0 || timer_create(CLOCK_MONOTONIC, &ev, &timer) != 0) return 1;
  struct itimerspec its = {{ms / 1000, (ms % 1000) * 1000000L}, {ms / 1000, (ms % 1000) * 1000000L}};
  if (timer_settime(timer, 0, &its, NULL) != 0) return 1;
  for (int i = 1; i <= limit; i++) {
    uint64_t n = 0;
    if (read(efd, &n, sizeof n) != sizeof n) return 1;
    printf("%d\n", i);
  }
  return 0;
}
