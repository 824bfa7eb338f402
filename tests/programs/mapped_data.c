// A job that keeps its data in a file it maps shared and writes through
// memory, as numpy.memmap arrays and out-of-core solvers do: FILE (made
// sparse, 65 pages and 100 bytes) is mapped from its second page to its
// end, the last page in part. Tick i adds i to the first word of page
// (7 * i) % 64 (most pages are first written after the early ticks: holes
// until then) and 1 to the first word of the part page, then prints
// "tick I sum S", S the sum of every word of the mapped data; the first
// page, not mapped, gets "tick I" by pwrite. The output depends only on
// the file's contents, so a restore that left what the job wrote after the
// dump in the file prints other sums.
// usage: mapped_data FILE TICKS INTERVAL_MS
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { kPage = 4096, kPages = 64, kTail = 100 };

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: mapped_data FILE TICKS INTERVAL_MS\n");
    return 2;
  }
  const int ticks = atoi(argv[2]), interval_ms = atoi(argv[3]);
  int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || ftruncate(fd, (kPages + 1) * kPage + kTail) != 0) {
    perror("mapped_data: making the file");
    return 1;
  }
  const size_t len = kPages * kPage + kTail;
  char *data = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, kPage);
  if (data == MAP_FAILED) {
    perror("mapped_data: mmap");
    return 1;
  }
  for (int i = 1; i <= ticks; i++) {
    *(int64_t *)(data + (size_t)((7 * i) % kPages) * kPage) += i;
    *(int64_t *)(data + (size_t)kPages * kPage) += 1;
    int64_t sum = 0;
    for (size_t off = 0; off + sizeof(int64_t) <= len; off += sizeof(int64_t))
      sum += *(int64_t *)(data + off);
    char head[32];
    int n = snprintf(head, sizeof head, "tick %d\n", i);
    if (pwrite(fd, head, (size_t)n, 0) != n) {
      perror("mapped_data: pwrite");
      return 1;
    }
    printf("tick %d sum %lld\n", i, (long long)sum);
    fflush(stdout);
    struct timespec t = {interval_ms / 1000, (long)(interval_ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
  }
  return 0;
}
