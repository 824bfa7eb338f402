/* A parent that loads data, then forks workers that read it (a Python pool
 * forked after loading its arrays, preforked server workers): the data is
 * shared copy-on-write between them, one copy in memory however many
 * workers there are.
 *
 * Usage: cow_pool STEPS MS MIB
 * The parent fills MIB MiB of private anonymous memory (and a little heap)
 * with data unique to each page, and writes every other page of a private
 * mapping of a 4 MiB file it makes in its cwd (cow_pool.data), forks 3
 * workers, and then every MS ms, for STEPS steps, each process rewrites one
 * page of its own (a worker first makes one page of each region zero) and
 * checks both regions: their checksum, and that it
 * still shares most of each (the region's Private_Dirty in
 * /proc/self/smaps under a quarter of its size; each process holds
 * privately only the pages it wrote). The workers report
 * through pipes (and end when the parent is done with them); the parent
 * prints one line a step:
 *   step S sums A B C D shared 1 1 1 1
 * then "done" once the workers have ended. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { WORKERS = 3, PAGE = 4096 };

static unsigned char *region, *file_region;
static size_t region_bytes;
enum { FILE_BYTES = 4 << 20 };
static uint64_t *heap_data;
enum { HEAP_WORDS = 64 * 1024 };

static uint64_t checksum(void) {
  uint64_t sum = 0;
  for (size_t off = 0; off < region_bytes; off += PAGE) {
    const uint64_t *w = (const uint64_t *)(region + off);
    sum = sum * 31 + w[0] + w[PAGE / 8 - 1];
  }
  for (size_t i = 0; i < HEAP_WORDS; i += 512) sum = sum * 7 + heap_data[i];
  for (size_t off = 0; off < FILE_BYTES; off += PAGE) sum = sum * 5 + file_region[off + 8];
  return sum;
}

/* Whether the privately held dirty memory of the mapping at `at`, `bytes`
 * long, is under a quarter of it. */
static int mostly_shared_at(const void *at, size_t bytes) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (!f) return 0;
  char line[512];
  int in_region = 0;
  long private_kb = -1;
  unsigned long start = (unsigned long)at;
  while (fgets(line, sizeof line, f)) {
    unsigned long s, e;
    if (sscanf(line, "%lx-%lx ", &s, &e) == 2) {
      in_region = s <= start && start < e;
      continue;
    }
    long kb;
    if (in_region && sscanf(line, "Private_Dirty: %ld kB", &kb) == 1) private_kb = kb;
  }
  fclose(f);
  if (private_kb < 0) return 0;
  return private_kb * 1024 < (long)(bytes / 4);
}

static int mostly_shared(void) {
  return mostly_shared_at(region, region_bytes) && mostly_shared_at(file_region, FILE_BYTES);
}

static void rewrite_own_page(int who, int step) {
  size_t pages = region_bytes / PAGE;
  size_t page = ((size_t)who * 997 + (size_t)step * 13) % pages;
  uint64_t *w = (uint64_t *)(region + page * PAGE);
  w[0] = w[0] * 3 + (uint64_t)who + 1;
}

static void sleep_ms(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000};
  while (nanosleep(&t, &t) != 0) {}
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: cow_pool STEPS MS MIB\n");
    return 2;
  }
  int steps = atoi(argv[1]), ms = atoi(argv[2]);
  region_bytes = (size_t)atoi(argv[3]) << 20;
  region = mmap(NULL, region_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) return 1;
  uint64_t x = 88172645463325252ull;
  for (size_t off = 0; off < region_bytes; off += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    *(uint64_t *)(region + off) = x;
  }
  int fd = open("cow_pool.data", O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return 1;
  static unsigned char page[PAGE];
  for (size_t off = 0; off < FILE_BYTES; off += PAGE) {
    memset(page, (int)(off / PAGE), PAGE);
    if (write(fd, page, PAGE) != PAGE) return 1;
  }
  /* Written back: its page cache pages are clean, and only the pages
   * written through the private mapping count as dirty. */
  if (fsync(fd) < 0) return 1;
  file_region = mmap(NULL, FILE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (file_region == MAP_FAILED) return 1;
  close(fd);
  for (size_t off = 0; off < FILE_BYTES; off += 2 * PAGE) file_region[off + 8] ^= 0x5a;
  heap_data = malloc(HEAP_WORDS * sizeof *heap_data);
  for (size_t i = 0; i < HEAP_WORDS; i++) heap_data[i] = i * 2654435761u;
  setvbuf(stdout, NULL, _IOLBF, 0);

  int from[WORKERS];
  pid_t pids[WORKERS];
  int release[2];  /* the workers end once the parent has closed its end */
  if (pipe(release) < 0) return 1;
  for (int k = 0; k < WORKERS; k++) {
    int p[2];
    if (pipe(p) < 0) return 1;
    pids[k] = fork();
    if (pids[k] < 0) return 1;
    if (pids[k] == 0) {
      close(p[0]);
      close(release[1]);
      for (int j = 0; j < k; j++) close(from[j]);
      /* A page of each region the worker makes zero: dropped from the
       * anonymous one (it reads zeros again), zero-filled in the file's. */
      madvise(region + (size_t)(k + 1) * 7 * PAGE, PAGE, MADV_DONTNEED);
      memset(file_region + (size_t)(k + 1) * 2 * PAGE, 0, PAGE);
      for (int s = 1; s <= steps; s++) {
        sleep_ms(ms);
        rewrite_own_page(k + 1, s);
        char msg[64];
        int n = snprintf(msg, sizeof msg, "%016llx %d\n", (unsigned long long)checksum(),
                         mostly_shared());
        if (write(p[1], msg, (size_t)n) != n) _exit(1);
      }
      char c;
      while (read(release[0], &c, 1) > 0) {}
      _exit(0);
    }
    close(p[1]);
    from[k] = p[0];
  }
  for (int s = 1; s <= steps; s++) {
    sleep_ms(ms);
    rewrite_own_page(0, s);
    char sums[WORKERS + 1][17];
    int shared[WORKERS + 1];
    snprintf(sums[0], sizeof sums[0], "%016llx", (unsigned long long)checksum());
    shared[0] = mostly_shared();
    for (int k = 0; k < WORKERS; k++) {
      char msg[64];
      size_t got = 0;
      while (got < 19) {  /* 16 hex digits, a space, 0 or 1, a newline */
        ssize_t n = read(from[k], msg + got, 19 - got);
        if (n <= 0) return 1;
        got += (size_t)n;
      }
      msg[16] = 0;
      strcpy(sums[k + 1], msg);
      shared[k + 1] = msg[17] - '0';
    }
    printf("step %d sums %s %s %s %s shared %d %d %d %d\n", s, sums[0], sums[1], sums[2], sums[3],
           shared[0], shared[1], shared[2], shared[3]);
  }
  close(release[1]);
  for (int k = 0; k < WORKERS; k++) waitpid(pids[k], NULL, 0);
  printf("done\n");
  return 0;
}
