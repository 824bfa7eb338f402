// A job with 8 MiB of private memory from the hugetlb pool (MAP_HUGETLB,
// the pool's default page size), as libhugetlbfs or a code's own
// MAP_HUGETLB give it: every 4 KiB of it starts with a value of its own;
// each tick adds the tick number to one of them, then prints the sum of
// all and the page size its mapping has now (/proc/self/smaps'
// KernelPageSize: the pool's huge page, also after a restore). The output is
// the same on every run.
// With "shared", also shared memory from the pool, as MPI libraries built
// for huge pages use it between ranks: 4 MiB MAP_SHARED | MAP_ANONYMOUS |
// MAP_HUGETLB and a 2 MiB SysV segment (SHM_HUGETLB, removed once attached),
// both shared with a forked child. Each tick the parent asks the child,
// through the first of them, to add the tick number to one value of each;
// once the child says it did, the parent prints their sums and page sizes
// too. A child that no longer shares them with its parent never answers.
// usage: hugetlb_job TICKS INTERVAL_MS [shared]
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

static uint64_t weighted_sum(const uint64_t *mem, size_t bytes) {
  uint64_t sum = 0;
  const size_t words = kPage / sizeof *mem;
  for (size_t i = 0; i < bytes / kPage; i++) sum += mem[i * words] * (i + 1);
  return sum;
}

enum { kShmSize = 4 << 20, kSysvSize = 2 << 20 };
// Words of the shared region's first page after its value: the tick the
// parent asks for (-1: end) and the last one the child did.
enum { kAsk = 1, kDone = 2 };

static void child_loop(uint64_t *shm, uint64_t *sysv) {
  const size_t words = kPage / sizeof *shm;
  const struct timespec ms = {0, 1000000};
  uint64_t last = 0;
  for (;;) {
    uint64_t t = __atomic_load_n(&shm[kAsk], __ATOMIC_ACQUIRE);
    if (t == (uint64_t)-1) _exit(0);
    if (t != last) {
      shm[(t * 13 % (kShmSize / kPage)) * words] += t;
      sysv[(t * 11 % (kSysvSize / kPage)) * words] += t;
      __atomic_store_n(&shm[kDone], t, __ATOMIC_RELEASE);
      last = t;
    }
    nanosleep(&ms, NULL);
  }
}

int main(int argc, char **argv) {
  if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "shared") != 0)) {
    fprintf(stderr, "usage: hugetlb_job TICKS INTERVAL_MS [shared]\n");
    return 2;
  }
  int ticks = atoi(argv[1]), interval = atoi(argv[2]);
  uint64_t *mem = mmap(NULL, kSize, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
  if (mem == MAP_FAILED) return perror("mmap(MAP_HUGETLB)"), 1;
  const size_t words = kPage / sizeof *mem, pages = kSize / kPage;
  for (size_t i = 0; i < pages; i++) mem[i * words] = i * 7 + 1;
  uint64_t *shm = NULL, *sysv = NULL;
  pid_t child = -1;
  if (argc == 4) {
    shm = mmap(NULL, kShmSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB,
               -1, 0);
    if (shm == MAP_FAILED) return perror("mmap(MAP_SHARED | MAP_HUGETLB)"), 1;
    int id = shmget(IPC_PRIVATE, kSysvSize, IPC_CREAT | SHM_HUGETLB | 0600);
    if (id < 0) return perror("shmget(SHM_HUGETLB)"), 1;
    sysv = shmat(id, NULL, 0);
    if (sysv == (void *)-1) return perror("shmat"), 1;
    shmctl(id, IPC_RMID, NULL);
    for (size_t i = 0; i < kShmSize / kPage; i++) shm[i * words] = i * 3 + 2;
    for (size_t i = 0; i < kSysvSize / kPage; i++) sysv[i * words] = i * 5 + 3;
    child = fork();
    if (child < 0) return perror("fork"), 1;
    if (child == 0) child_loop(shm, sysv);
  }
  struct timespec pause = {interval / 1000, (long)(interval % 1000) * 1000000};
  const struct timespec ms = {0, 1000000};
  for (int t = 1; t <= ticks; t++) {
    nanosleep(&pause, NULL);
    mem[(size_t)(t * 37 % (int)pages) * words] += (uint64_t)t;
    printf("tick %d sum %" PRIu64 " page %lu KiB", t, weighted_sum(mem, kSize), kernel_page_kib(mem));
    if (shm) {
      __atomic_store_n(&shm[kAsk], (uint64_t)t, __ATOMIC_RELEASE);
      while (__atomic_load_n(&shm[kDone], __ATOMIC_ACQUIRE) != (uint64_t)t) nanosleep(&ms, NULL);
      printf(" shared %" PRIu64 " page %lu KiB sysv %" PRIu64 " page %lu KiB",
             weighted_sum(shm, kShmSize), kernel_page_kib(shm), weighted_sum(sysv, kSysvSize),
             kernel_page_kib(sysv));
    }
    printf("\n");
    fflush(stdout);
  }
  if (shm) {
    __atomic_store_n(&shm[kAsk], (uint64_t)-1, __ATOMIC_RELEASE);
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
      return fprintf(stderr, "hugetlb_job: the child did not end well\n"), 1;
  }
  return 0;
}
