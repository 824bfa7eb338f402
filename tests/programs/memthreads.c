/* Two threads over a large heap: the dump test's subject.
 * Usage: memthreads SIZE_MIB TICKS INTERVAL_MS
 * Fills SIZE_MIB of memory: 10 % of the pages random (seeded), the rest
 * written with zeros. A worker thread re-checksums the random pages every
 * tick; the main thread prints "tick N sum=S" with the worker's result.
 * The output depends only on the arguments, so a run that was dumped (or
 * restored) must print exactly what an undisturbed run prints. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint8_t *mem;
static size_t npages;
static volatile uint64_t sum_result;
static volatile int ticks_wanted, ticks_done;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static uint64_t rng(uint64_t *s) { /* xorshift64* */
  *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
  return *s * 0x2545F4914F6CDD1DULL;
}

static uint64_t checksum(void) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t p = 0; p < npages; p += 10)
    for (size_t i = 0; i < 4096; i += 8) h = (h ^ *(uint64_t *)(mem + p * 4096 + i)) * 1099511628211ULL;
  return h;
}

static void *worker(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&mu);
    while (ticks_done == ticks_wanted) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    uint64_t s = checksum();
    pthread_mutex_lock(&mu);
    sum_result = s;
    ticks_done++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: memthreads SIZE_MIB TICKS INTERVAL_MS\n"); return 2; }
  size_t mib = strtoul(argv[1], 0, 10);
  int ticks = atoi(argv[2]);
  long interval_ms = atol(argv[3]);
  npages = mib * 256;
  mem = malloc(npages * 4096);
  if (!mem) return 1;
  uint64_t seed = 42;
  for (size_t p = 0; p < npages; p++) {
    if (p % 10 == 0)
      for (size_t i = 0; i < 4096; i += 8) *(uint64_t *)(mem + p * 4096 + i) = rng(&seed);
    else
      memset(mem + p * 4096, 0, 4096);
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  pthread_t t;
  pthread_create(&t, NULL, worker, NULL);
  printf("ready\n");
  struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
  for (int n = 1; n <= ticks; n++) {
    pthread_mutex_lock(&mu);
    ticks_wanted++;
    pthread_cond_broadcast(&cv);
    while (ticks_done != ticks_wanted) pthread_cond_wait(&cv, &mu);
    uint64_t s = sum_result;
    pthread_mutex_unlock(&mu);
    /* Change one random page per tick so memory keeps moving. */
    mem[(size_t)(n % npages) * 4096 / 10 * 10] ^= 0;
    printf("tick %d sum=%016llx\n", n, (unsigned long long)s);
    nanosleep(&ts, NULL);
  }
  printf("done\n");
  return 0;
}
