/* A job with many open files (HPC codes raise their fd limit): raises its
 * soft RLIMIT_NOFILE, opens /dev/null N times, then counts 1..30 slowly.
 * Exits 3 when the hard limit is too low.  Usage: manyfds N */
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>
#include <stdlib.h>
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 0;
  struct rlimit r;
  getrlimit(RLIMIT_NOFILE, &r);
  if (r.rlim_max < (rlim_t)n + 100) return 3;
  r.rlim_cur = (rlim_t)n + 100;
  setrlimit(RLIMIT_NOFILE, &r);
  for (int i = 0; i < n; i++) if (open("/dev/null", O_RDONLY) < 0) { perror("open"); return 1; }
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (int i = 1; i <= 30; i++) { printf("%d\n", i); usleep(100000); }
  return 0;
}
