/* A job that sweeps over a data file it maps shared, as an out-of-core
 * solver or a numpy.memmap array does: FILE, a header page (written with
 * pwrite, not mapped: as a .npy file's) and MIB MiB mapped after it, each page's first
 * word set to the page's number at the start; tick I adds I to the first
 * word of PER_TICK pages, from page (I * PER_TICK) % pages on, and prints
 * "tick I"; after the last tick it prints "sum S", S the sum over the pages
 * of each one's first word times its number plus one. With "pwrite", the
 * first of each tick's pages is written with pwrite(2) instead of through
 * the mapping. With "random", the rest of each page holds pseudo-random
 * bytes (data no compressor shrinks, as a file of doubles mostly is); the
 * sum does not read them. The sum depends only on the file's contents: a
 * restore that left the file as the job left it later, or a dump that kept
 * a page as it was before the job's last write to it, prints another.
 * Usage: mapped_sweep FILE MIB TICKS PER_TICK INTERVAL_MS [pwrite|random] */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { kPage = 4096 };

int main(int argc, char **argv) {
  if (argc != 6 && argc != 7) {
    fprintf(stderr, "usage: mapped_sweep FILE MIB TICKS PER_TICK INTERVAL_MS [pwrite|random]\n");
    return 2;
  }
  const size_t len = (size_t)atoi(argv[2]) << 20, pages = len / kPage;
  const int ticks = atoi(argv[3]), per_tick = atoi(argv[4]), interval_ms = atoi(argv[5]);
  const int use_pwrite = argc == 7 && !strcmp(argv[6], "pwrite");
  const int random = argc == 7 && !strcmp(argv[6], "random");
  int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
  char header[kPage] = "mapped_sweep data file\n";
  if (fd < 0 || pwrite(fd, header, sizeof header, 0) != sizeof header ||
      ftruncate(fd, (off_t)(kPage + len)) != 0) {
    perror("mapped_sweep: making the file");
    return 1;
  }
  char *data = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, kPage);
  if (data == MAP_FAILED) {
    perror("mapped_sweep: mmap");
    return 1;
  }
  uint64_t x = 88172645463325252ull;  /* xorshift64 */
  for (size_t p = 0; p < pages; p++) {
    *(int64_t *)(data + p * kPage) = (int64_t)p;
    for (size_t w = 1; random && w < kPage / 8; w++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      ((uint64_t *)(data + p * kPage))[w] = x;
    }
  }
  struct timespec pause = {interval_ms / 1000, (long)(interval_ms % 1000) * 1000000};
  for (int i = 1; i <= ticks; i++) {
    for (int k = 0; k < per_tick; k++) {
      const size_t p = ((size_t)i * per_tick + k) % pages;
      int64_t v = *(int64_t *)(data + p * kPage) + i;
      if (use_pwrite && k == 0) {
        if (pwrite(fd, &v, sizeof v, (off_t)(kPage + p * kPage)) != sizeof v) {
          perror("mapped_sweep: pwrite");
          return 1;
        }
      } else {
        *(int64_t *)(data + p * kPage) = v;
      }
    }
    printf("tick %d\n", i);
    fflush(stdout);
    nanosleep(&pause, NULL);
  }
  int64_t sum = 0;
  for (size_t p = 0; p < pages; p++) sum += *(int64_t *)(data + p * kPage) * (int64_t)(p + 1);
  printf("sum %lld\n", (long long)sum);
  return 0;
}
