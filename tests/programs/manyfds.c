/* A job with many open files (HPC codes raise their fd limit): raises its
 * soft RLIMIT_NOFILE, opens /dev/null N times, then an eventfd watched by an
 * epoll (after them, so a dump reads the two on different threads), then
 * counts 1..30 slowly: each line "I R V", R the events epoll_wait saw after
 * the eventfd was written (1), V the value read back (1).
 * Exits 3 when the hard limit is too low.  Usage: manyfds N */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 0;
  struct rlimit r;
  getrlimit(RLIMIT_NOFILE, &r);
  if (r.rlim_max < (rlim_t)n + 100) return 3;
  r.rlim_cur = (rlim_t)n + 100;
  setrlimit(RLIMIT_NOFILE, &r);
  for (int i = 0; i < n; i++) if (open("/dev/null", O_RDONLY) < 0) { perror("open"); return 1; }
  int ev = eventfd(0, 0), ep = epoll_create1(0);
  struct epoll_event want = {.events = EPOLLIN, .data.fd = ev};
  if (ev < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ev, &want) < 0) { perror("epoll"); return 1; }
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (int i = 1; i <= 30; i++) {
    uint64_t one = 1, v = 0;
    struct epoll_event got;
    if (write(ev, &one, sizeof one) != sizeof one) return 1;
    int ready = epoll_wait(ep, &got, 1, 0);
    if (ready == 1 && got.data.fd != ev) ready = -1;
    if (read(ev, &v, sizeof v) != sizeof v) return 1;
    printf("%d %d %llu\n", i, ready, (unsigned long long)v);
    usleep(100000);
  }
  return 0;
}
