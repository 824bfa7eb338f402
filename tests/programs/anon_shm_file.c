// A job that opens its anonymous shared memory as a file and maps it again
// (as CRIU's ZDTM shmemfd-priv does; a sandbox or an allocator may do the
// same): MAP_SHARED | MAP_ANONYMOUS memory of 8 pages, an fd on it through
// /proc/self/map_files (root, or CAP_CHECKPOINT_RESTORE), a private mapping
// of pages 1-6 of that fd (one page written, so copied) and a shared one of
// pages 2-5. Then, every INTERVAL_MS, tick t writes the first mapping's page
// t % 8 and the second shared mapping's page t % 4, writes one more page of
// the private mapping at tick 5, and prints what the three mappings (and,
// while it is open, the fd) show: a private page not written yet shows the
// object's page as it is now, a copied one what was written into it. With
// "closed" the fd is closed before the ticks. The output is the same on
// every run.
// usage: anon_shm_file TICKS INTERVAL_MS [closed]
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { kPage = 4096, kPages = 8 };

static uint64_t *page(char *base, int i) { return (uint64_t *)(base + (size_t)i * kPage); }

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: anon_shm_file TICKS INTERVAL_MS [closed]\n");
    return 2;
  }
  int ticks = atoi(argv[1]), interval_ms = atoi(argv[2]);
  int closed = argc > 3 && strcmp(argv[3], "closed") == 0;
  char *region = mmap(NULL, kPages * kPage, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) return perror("mmap"), 1;
  for (int i = 0; i < kPages; i++) *page(region, i) = (uint64_t)(i + 1) * 1000;
  char path[128];
  snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", (unsigned long)region,
           (unsigned long)(region + kPages * kPage));
  int fd = open(path, O_RDWR);
  if (fd < 0) return perror(path), 1;
  char *priv = mmap(NULL, 6 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, kPage);
  char *shared = mmap(NULL, 4 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 2 * kPage);
  if (priv == MAP_FAILED || shared == MAP_FAILED) return perror("mmap of the fd"), 1;
  *page(priv, 1) = 7;  // copied: object page 2 no longer shows here
  if (closed) close(fd);
  struct timespec pause = {interval_ms / 1000, (long)(interval_ms % 1000) * 1000000};
  for (int t = 1; t <= ticks; t++) {
    nanosleep(&pause, NULL);
    *page(region, t % kPages) += (uint64_t)t;
    *page(shared, t % 4) += 100;  // object page 2 + t % 4
    if (t == 5) *page(priv, 3) += 1;  // copied from here on
    uint64_t p = 0, s = 0, r = 0;
    for (int i = 0; i < 6; i++) p = p * 31 + *page(priv, i);
    for (int i = 0; i < 4; i++) s = s * 31 + *page(shared, i);
    for (int i = 0; i < kPages; i++) r = r * 31 + *page(region, i);
    printf("tick %d private %llu shared %llu region %llu", t, (unsigned long long)p,
           (unsigned long long)s, (unsigned long long)r);
    if (!closed) {
      uint64_t v = 0;
      if (pread(fd, &v, sizeof v, (off_t)(t % kPages) * kPage) != sizeof v) return perror("pread"), 1;
      printf(" fd %llu", (unsigned long long)v);
    }
    printf("\n");
    fflush(stdout);
  }
  return 0;
}
