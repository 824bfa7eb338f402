/* A job with many small mappings (a JVM, Python with many extension modules,
 * malloc arenas): N one-page private anonymous mappings, each holding its
 * own number, with a gap of one page between them so the kernel cannot merge
 * them. Then counts 1..COUNT, one line every 100 ms, checking every page
 * before each line (a line "bad PAGE" and exit 1 when one differs).
 * Usage: manymaps N [COUNT] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 0, count = argc > 2 ? atol(argv[2]) : 30;
  const long page = 4096;
  char *base = mmap(NULL, (size_t)(2 * n + 1) * page, PROT_NONE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) { perror("mmap"); return 1; }
  munmap(base, (size_t)(2 * n + 1) * page);  /* the range is free now: fill every other page */
  for (long i = 0; i < n; i++) {
    uint64_t *p = mmap(base + (2 * i + 1) * page, page, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED) { perror("mmap page"); return 1; }
    p[0] = (uint64_t)i * 2654435761u + 1;
    p[page / 8 - 1] = (uint64_t)i;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (long c = 1; c <= count; c++) {
    for (long i = 0; i < n; i++) {
      const uint64_t *p = (const uint64_t *)(base + (2 * i + 1) * page);
      if (p[0] != (uint64_t)i * 2654435761u + 1 || p[page / 8 - 1] != (uint64_t)i) {
        printf("bad %ld\n", i);
        return 1;
      }
    }
    printf("%ld\n", c);
    usleep(100000);
  }
  return 0;
}
