/* A job started under a NUMA memory policy, as `numactl --interleave` or
 * `--membind` starts one: it sets MPOL_INTERLEAVE over the nodes it may
 * use before its worker thread starts (which inherits it), then each round
 * prints both threads' policies (the worker reads its own) and touches a
 * new page. Usage: mempolicy ROUNDS INTERVAL_MS. Exits 77 where the kernel
 * has no NUMA policies. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { kInterleave = 3, kMaxNode = 1024 };
static atomic_int worker_mode = -1;
static atomic_ulong worker_nodes;

static int policy(unsigned long *nodes) {
  int mode = -1;
  unsigned long mask[kMaxNode / 64] = {0};
  if (syscall(SYS_get_mempolicy, &mode, mask, kMaxNode, NULL, 0) != 0) return -1;
  *nodes = mask[0];
  return mode;
}

static void *worker(void *arg) {
  (void)arg;
  for (;;) {
    unsigned long nodes = 0;
    int mode = policy(&nodes);
    atomic_store(&worker_nodes, nodes);
    atomic_store(&worker_mode, mode);
    struct timespec ms = {0, 20 * 1000000};
    nanosleep(&ms, NULL);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int rounds = atoi(argv[1]), interval = atoi(argv[2]);
  /* The nodes it may use: MPOL_F_MEMS_ALLOWED (4). */
  unsigned long allowed[kMaxNode / 64] = {0};
  if (syscall(SYS_get_mempolicy, NULL, allowed, kMaxNode, NULL, 4) != 0) {
    perror("mempolicy: get_mempolicy");
    return 77;
  }
  if (syscall(SYS_set_mempolicy, kInterleave, allowed, kMaxNode) != 0) {
    perror("mempolicy: set_mempolicy");
    return 77;
  }
  pthread_t w;
  pthread_create(&w, NULL, worker, NULL);
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  char *mem = malloc(page * (size_t)(rounds + 1));
  for (int r = 1; r <= rounds; r++) {
    struct timespec t = {interval / 1000, (interval % 1000) * 1000000L};
    nanosleep(&t, NULL);
    mem[(size_t)r * page] = (char)r;
    unsigned long nodes = 0;
    int mode = policy(&nodes);
    printf("round %d main mode %d nodes %#lx worker mode %d nodes %#lx\n", r, mode, nodes,
           atomic_load(&worker_mode), atomic_load(&worker_nodes));
    fflush(stdout);
  }
  return 0;
}
