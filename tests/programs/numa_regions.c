/* Memory given NUMA policies of its own with mbind, as libnuma's
 * numa_alloc_onnode and numa_alloc_interleaved, hwloc's area binding or
 * memkind give them: private regions bound, interleaved and preferred, one
 * left to the default, one with a policy on its middle pages only (the
 * kernel splits it in three), and a shared anonymous region bound (a policy of the
 * shared object). Each round it writes a page of each region and prints
 * the policy of each (get_mempolicy with MPOL_F_ADDR) and the sum of what
 * it wrote. Usage: numa_regions ROUNDS INTERVAL_MS. Exits 77 where the
 * kernel has no NUMA policies. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { kPreferred = 1, kBind = 2, kInterleave = 3, kMaxNode = 1024, kPages = 16 };

static unsigned long allowed[kMaxNode / 64];

static int bind_range(char *at, size_t len, int mode) {
  unsigned long first[kMaxNode / 64] = {0};
  const unsigned long *nodes = allowed;
  if (mode == kPreferred) { /* the first node it may use */
    for (int n = 0; n < kMaxNode; n++)
      if (allowed[n / 64] & (1ul << (n % 64))) {
        first[n / 64] = 1ul << (n % 64);
        break;
      }
    nodes = first;
  }
  return (int)syscall(SYS_mbind, at, len, mode, nodes, kMaxNode, 0);
}

static int policy_at(char *at, unsigned long *nodes) {
  int mode = -1;
  unsigned long mask[kMaxNode / 64] = {0};
  if (syscall(SYS_get_mempolicy, &mode, mask, kMaxNode, at, 2 /* MPOL_F_ADDR */) != 0) return -1;
  *nodes = mask[0];
  return mode;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int rounds = atoi(argv[1]), interval = atoi(argv[2]);
  if (syscall(SYS_get_mempolicy, NULL, allowed, kMaxNode, NULL, 4 /* MPOL_F_MEMS_ALLOWED */) != 0) {
    perror("numa_regions: get_mempolicy");
    return 77;
  }
  const size_t page = (size_t)sysconf(_SC_PAGESIZE), len = kPages * page;
  const char *names[] = {"bound",      "interleaved",  "preferred", "default",
                         "split-start", "split-middle", "split-end", "shared"};
  enum { kRegions = 8 };
  char *r[kRegions];
  for (int i = 0; i < 5; i++) {
    /* Apart from one another: the kernel would join neighbours. */
    char *at = mmap(NULL, 3 * len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (at == MAP_FAILED) return 1;
    munmap(at, len);
    munmap(at + 2 * len, len);
    r[i] = at + len;
  }
  /* One mapping bound in its middle quarter-to-three-quarters: three. */
  r[5] = r[4] + len / 4;
  r[6] = r[4] + 3 * len / 4;
  r[7] = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (r[7] == MAP_FAILED) return 1;
  if (bind_range(r[0], len, kBind) || bind_range(r[1], len, kInterleave) ||
      bind_range(r[2], len, kPreferred) || bind_range(r[5], len / 2, kBind) ||
      bind_range(r[7], len, kBind)) {
    perror("numa_regions: mbind");
    return 77;
  }
  unsigned long sum = 0;
  for (int round = 1; round <= rounds; round++) {
    struct timespec t = {interval / 1000, (interval % 1000) * 1000000L};
    nanosleep(&t, NULL);
    printf("round %d", round);
    for (int i = 0; i < kRegions; i++) {
      char *p = r[i] + (size_t)(round % 4) * page;
      *p = (char)(*p + round + i);
      sum += (unsigned char)*p;
      unsigned long nodes = 0;
      int mode = policy_at(r[i], &nodes);
      printf(" %s %d/%#lx", names[i], mode, nodes);
    }
    printf(" sum %lu\n", sum);
    fflush(stdout);
  }
  return 0;
}
