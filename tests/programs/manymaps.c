/* A job with many small mappings (a JVM, Python with many extension modules,
 * malloc arenas): N one-page private anonymous mappings, each holding its
 * own number, with a gap of one page between them so the kernel cannot merge
 * them. Then counts 1..COUNT, one line every 100 ms, checking every page
 * before each line (a line "bad PAGE" and exit 1 when one differs).
 * With CHURN 1, the mappings keep changing meanwhile: every 200 us the
 * protection of one of the first 64 pages flips (read-write, read-only),
 * in turn, so /proc/PID/maps is never the same for long; it checks that
 * each page is still as it last set it before it flips it again, and each
 * line that /proc/self/maps shows them so ("badprot PAGE" and exit 1 when
 * not: a restore gave a page another protection).
 * Usage: manymaps N [COUNT [CHURN]] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static uint64_t readonly;  /* CHURN: bit i set while page i is read-only */

/* Whether /proc/self/maps shows the first `k` pages as `ro` says. */
static int protections_ok(char *base, long page, long k, uint64_t ro) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512], perms[8];
  unsigned long start, end;
  long seen = 0;
  if (!f) { perror("/proc/self/maps"); return 0; }
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) == 3)
      for (long i = 0; i < k; i++)
        if (start == (unsigned long)(base + (2 * i + 1) * page)) {
          seen++;
          if ((perms[1] == 'w') == (int)(ro >> i & 1)) {
            printf("badprot %ld\n", i);
            fclose(f);
            return 0;
          }
        }
  fclose(f);
  if (seen != k) printf("badprot missing %ld of %ld\n", k - seen, k);
  return seen == k;
}

/* Whether the kernel may write to page `p`: getcpu(2), as a system call (not
 * the vDSO), stores the CPU number in a word of it that nothing checks, or
 * fails with EFAULT. */
static int writable(char *p) {
  return syscall(SYS_getcpu, (unsigned *)(p + 64), NULL, NULL) == 0;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 0, count = argc > 2 ? atol(argv[2]) : 30;
  const int churn = argc > 3 && atoi(argv[3]) == 1 && n > 0;
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
    if (!churn) {
      usleep(100000);
      continue;
    }
    if (churn && !protections_ok(base, page, n < 64 ? n : 64, readonly)) return 1;
    for (int t = 0; t < 500; t++) {  /* 100 ms */
      const long i = t % (n < 64 ? n : 64);
      /* Before each flip the page must still be as last set: a restore
       * that gave it another protection shows at its next flip, not only
       * at the next line (by then every page has been set again). */
      if (writable(base + (2 * i + 1) * page) != !(readonly >> i & 1)) {
        printf("badprot %ld\n", i);
        return 1;
      }
      readonly ^= 1ull << i;
      if (mprotect(base + (2 * i + 1) * page, page,
                   readonly >> i & 1 ? PROT_READ : PROT_READ | PROT_WRITE)) {
        perror("mprotect");
        return 1;
      }
      usleep(200);
    }
  }
  return 0;
}
