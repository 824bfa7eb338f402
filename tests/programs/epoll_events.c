/* An epoll over an eventfd and a pipe, as an event loop has them. Each round
 * adds to the eventfd, puts a byte in the pipe, asks epoll what is ready and
 * prints it; every third round it drains the eventfd and one pipe byte. A
 * restored run must print exactly what an uninterrupted one does: the
 * counter, the unread byte, the registrations (with their data) come back.
 * Usage: epoll_events [--closed] LIMIT INTERVAL_MS
 *          --closed: both are registered under fd 50, which is then closed
 *          and reused for /dev/null (the epoll watches them under a number
 *          that now names another file): the output is the same.
 *        epoll_events --stale: watches an fd that only a child of it holds
 *          afterwards (the parent closed it), and waits. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  perror(what);
  exit(1);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int efd = eventfd(30, EFD_NONBLOCK);
  int p[2];
  if (ep < 0 || efd < 0 || pipe(p) < 0) die("setup");
  int closed = argc > 1 && strcmp(argv[1], "--closed") == 0;
  if (closed) argv++, argc--;
  /* With --closed, each is added as fd 50, a copy closed right after. */
  int efd_as = closed ? dup2(efd, 50) : efd;
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0xe7e7e7e7e7e7e7e7ull};
  if (efd_as < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, efd_as, &ev) < 0) die("epoll_ctl eventfd");
  if (closed) close(50);
  int pipe_as = closed ? dup2(p[0], 50) : p[0];
  ev.events = EPOLLIN | EPOLLET;
  ev.data.u64 = 0x9193;
  if (pipe_as < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, pipe_as, &ev) < 0) die("epoll_ctl pipe");
  if (closed && (close(50) < 0 || dup2(open("/dev/null", O_RDONLY), 50) != 50)) die("reuse 50");
  if (argc > 1 && strcmp(argv[1], "--stale") == 0) {
    int other = eventfd(0, 0);
    ev.events = EPOLLIN;
    if (other < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, other, &ev) < 0) die("stale");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {  /* holds the file; ends with its parent */
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      for (;;) pause();
    }
    close(other);
    printf("epoll %d watches closed fd %d (file kept by child %d)\n", ep, other, (int)child);
    for (;;) pause();
  }
  long limit = argc > 1 ? atol(argv[1]) : 10;
  long ms = argc > 2 ? atol(argv[2]) : 200;
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  for (long i = 1; i <= limit; i++) {
    uint64_t add = (uint64_t)i;
    if (write(efd, &add, sizeof add) != sizeof add) die("write eventfd");
    if (write(p[1], "x", 1) != 1) die("write pipe");
    struct epoll_event got[4];
    int n = epoll_wait(ep, got, 4, 0);
    if (n < 0) die("epoll_wait");
    uint64_t tags = 0;
    for (int k = 0; k < n; k++) tags ^= got[k].data.u64 ^ got[k].events;
    printf("%ld: %d ready, tags %llx", i, n, (unsigned long long)tags);
    if (i % 3 == 0) {
      uint64_t count;
      char c;
      if (read(efd, &count, sizeof count) != sizeof count) die("read eventfd");
      if (read(p[0], &c, 1) != 1) die("read pipe");
      printf(", eventfd held %llu", (unsigned long long)count);
    }
    printf("\n");
    nanosleep(&ts, NULL);
  }
  return 0;
}
