// A job with 8 MiB of private memory from the hugetlb pool (MAP_HUGETLB,
// the pool's default page size), as libhugetlbfs or a code's own
// MAP_HUGETLB give it: every 4 KiB of it starts with a value of its own;
// each tick adds the tick number to one of them, then prints the sum of
// all and the page size its mapping has now (/proc/self/smaps'
// KernelPageSize: the pool's huge page, also after a restore). The output is
// the same on every run.
// usage: hugetlb_job TICKS INTERVAL_MS
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

enum { kSize = 8 << 20, kPage = 4096 };

// KernelPageSize of the mapping at `addr`, in KiB (0: not found).
static unsigned long kernel_page_kib(void *addr) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (!f) return 0;
  char line[512];
  int in = 0;
  unsigned long kib = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long start, end;
    if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      in = start == (unsigned long)addr;
      continue;
    }
    if (in && sscanf(line, "KernelPageSize: %lu kB", &kib) == 1) break;
  }
  fclose(f);
  return kib;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: hugetlb_job TICKS INTERVAL_MS\n");
    return 2;
  }
  int ticks = atoi(argv[1]), interval = atoi(argv[2]);
  uint64_t *mem = mmap(NULL, kSize, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
  if (mem == MAP_FAILED) return perror("mmap(MAP_HUGETLB)"), 1;
  const size_t words = kPage / sizeof *mem, pages = kSize / kPage;
  for (size_t i = 0; i < pages; i++) mem[i * words] = i * 7 + 1;
  struct timespec pause = {interval / 1000, (long)(interval % 1000) * 1000000};
  for (int t = 1; t <= ticks; t++) {
    nanosleep(&pause, NULL);
    mem[(size_t)(t * 37 % (int)pages) * words] += (uint64_t)t;
    uint64_t sum = 0;
    for (size_t i = 0; i < pages; i++) sum += mem[i * words] * (i + 1);
    printf("tick %d sum %" PRIu64 " page %lu KiB\n", t, sum, kernel_page_kib(mem));
    fflush(stdout);
  }
  return 0;
}
