/* A job whose threads are bound to CPUs, as OpenMP's OMP_PROC_BIND, an MPI
 * launcher or taskset bind them: the main thread to the last CPU it may
 * use, a worker to the first, a third left as it started. Each round
 * prints every thread's CPUs (read by the main thread), and a sum the
 * worker keeps adding to.
 * Usage: affinity ROUNDS INTERVAL_MS. Exits 77 with fewer than 2 CPUs. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_long sum;

static void cpus_text(pthread_t t, char *out, size_t n) {
  cpu_set_t set;
  CPU_ZERO(&set);
  out[0] = 0;
  if (pthread_getaffinity_np(t, sizeof set, &set) != 0) {
    snprintf(out, n, "?");
    return;
  }
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &set)) snprintf(out + strlen(out), n - strlen(out), "%s%d", *out ? "," : "", c);
}

static void *worker(void *arg) {
  int cpu = *(int *)arg;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  for (long i = 1;; i++) {
    atomic_fetch_add(&sum, i % 7);
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  return NULL;
}

static void *idle(void *arg) {
  (void)arg;
  for (;;) {
    struct timespec s = {1, 0};
    nanosleep(&s, NULL);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int rounds = atoi(argv[1]), interval = atoi(argv[2]);
  cpu_set_t mine;
  sched_getaffinity(0, sizeof mine, &mine);
  int first = -1, last = -1;
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &mine)) {
      if (first < 0) first = c;
      last = c;
    }
  if (CPU_COUNT(&mine) < 2) {
    fprintf(stderr, "affinity: fewer than 2 CPUs\n");
    return 77;
  }
  pthread_t w, u;
  pthread_create(&u, NULL, idle, NULL);  /* before the main thread binds: unbound */
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(last, &set);
  sched_setaffinity(0, sizeof set, &set);
  pthread_create(&w, NULL, worker, &first);
  struct timespec settle = {0, 50 * 1000000};
  nanosleep(&settle, NULL);
  for (int r = 1; r <= rounds; r++) {
    char a[256], b[256], c[256];
    cpus_text(pthread_self(), a, sizeof a);
    cpus_text(w, b, sizeof b);
    cpus_text(u, c, sizeof c);
    printf("round %d main %s worker %s unbound %s working %d\n", r, a, b, c, atomic_load(&sum) > 0);
    fflush(stdout);
    struct timespec t = {interval / 1000, (interval % 1000) * 1000000L};
    nanosleep(&t, NULL);
  }
  return 0;
}
