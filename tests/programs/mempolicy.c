/* A job started under a NUMA memory policy, as `numactl --interleave` or
 * `--membind` starts one: it sets MPOL_INTERLEAVE over the nodes it may
 * use before its worker threads start (the first inherits it; the second
 * sets MPOL_PREFERRED on the first of those nodes for itself, the third
 * the default for itself, as libnuma's numa_set_preferred and
 * numa_set_localalloc do in a worker), then each round prints every
 * thread's policy (each worker reads its own) and touches a new page.
 * Usage: mempolicy ROUNDS INTERVAL_MS. Exits 77 where the kernel has no
 * NUMA policies. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { kDefault = 0, kPreferred = 1, kInterleave = 3, kMaxNode = 1024, kWorkers = 3 };
static atomic_int worker_mode[kWorkers] = {-1, -1, -1};
static atomic_ulong worker_nodes[kWorkers];
static atomic_int worker_ready;
static unsigned long allowed[kMaxNode / 64];

static int policy(unsigned long *nodes) {
  int mode = -1;
  unsigned long mask[kMaxNode / 64] = {0};
  if (syscall(SYS_get_mempolicy, &mode, mask, kMaxNode, NULL, 0) != 0) return -1;
  *nodes = mask[0];
  return mode;
}

static void *worker(void *arg) {
  const int i = (int)(long)arg;
  if (i == 1) { /* the first node it may use, for itself */
    unsigned long first[kMaxNode / 64] = {0};
    for (int n = 0; n < kMaxNode; n++)
      if (allowed[n / 64] & (1ul << (n % 64))) {
        first[n / 64] = 1ul << (n % 64);
        break;
      }
    if (syscall(SYS_set_mempolicy, kPreferred, first, kMaxNode) != 0) perror("set_mempolicy");
  } else if (i == 2) {
    if (syscall(SYS_set_mempolicy, kDefault, NULL, 0) != 0) perror("set_mempolicy");
  }
  atomic_fetch_add(&worker_ready, 1);
  for (;;) {
    unsigned long nodes = 0;
    int mode = policy(&nodes);
    atomic_store(&worker_nodes[i], nodes);
    atomic_store(&worker_mode[i], mode);
    struct timespec ms = {0, 20 * 1000000};
    nanosleep(&ms, NULL);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int rounds = atoi(argv[1]), interval = atoi(argv[2]);
  /* The nodes it may use: MPOL_F_MEMS_ALLOWED (4). */
  if (syscall(SYS_get_mempolicy, NULL, allowed, kMaxNode, NULL, 4) != 0) {
    perror("mempolicy: get_mempolicy");
    return 77;
  }
  if (syscall(SYS_set_mempolicy, kInterleave, allowed, kMaxNode) != 0) {
    perror("mempolicy: set_mempolicy");
    return 77;
  }
  pthread_t w[kWorkers];
  for (long i = 0; i < kWorkers; i++) pthread_create(&w[i], NULL, worker, (void *)i);
  while (atomic_load(&worker_ready) < kWorkers) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  char *mem = malloc(page * (size_t)(rounds + 1));
  for (int r = 1; r <= rounds; r++) {
    struct timespec t = {interval / 1000, (interval % 1000) * 1000000L};
    nanosleep(&t, NULL);
    mem[(size_t)r * page] = (char)r;
    unsigned long nodes = 0;
    int mode = policy(&nodes);
    printf("round %d main mode %d nodes %#lx", r, mode, nodes);
    for (int i = 0; i < kWorkers; i++)
      printf(" worker%d mode %d nodes %#lx", i, atomic_load(&worker_mode[i]),
             atomic_load(&worker_nodes[i]));
    printf("\n");
    fflush(stdout);
  }
  return 0;
}
