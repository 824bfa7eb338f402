/* Holds fds on its own namespaces (as container tools and MPI launchers
 * keep /proc/self/ns/net and the like to setns() back later). Each round it
 * prints, per namespace, whether the fd still names the namespace it runs
 * in ("same") or another one. Usage: ns_fds N INTERVAL_MS */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const kinds[] = {"net", "uts", "ipc", "mnt", "cgroup"};
enum { kN = sizeof kinds / sizeof kinds[0] };

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 10, ms = argc > 2 ? atol(argv[2]) : 100;
  setvbuf(stdout, NULL, _IOLBF, 0);
  int fds[kN];
  char path[64], held[64], now[64];
  for (int k = 0; k < kN; k++) {
    snprintf(path, sizeof path, "/proc/self/ns/%s", kinds[k]);
    if ((fds[k] = open(path, O_RDONLY)) < 0) return perror(path), 1;
  }
  for (long i = 1; i <= n; i++) {
    printf("%ld", i);
    for (int k = 0; k < kN; k++) {
      snprintf(path, sizeof path, "/proc/self/fd/%d", fds[k]);
      ssize_t a = readlink(path, held, sizeof held - 1);
      snprintf(path, sizeof path, "/proc/self/ns/%s", kinds[k]);
      ssize_t b = readlink(path, now, sizeof now - 1);
      int same = a > 0 && a == b && memcmp(held, now, (size_t)a) == 0;
      printf(" %s=%s", kinds[k], same ? "same" : "other");
    }
    printf("\n");
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
  }
  return 0;
}
