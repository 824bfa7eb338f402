/* Threads whose stacks hold many pages, next to threads whose stacks hold a
 * few: a dump that lets the job run on reads the small stacks while the job
 * is stopped and leaves the others in its copy-on-write snapshot
 * (src/parasite/keep_out.h); either way the image must hold each stack as
 * it was at the stop.
 * Usage: deep_stacks ROUNDS INTERVAL_MS
 * Four threads: two shallow ones on glibc's stacks, each with a counter on
 * its stack; one that recurses 32 frames of 64 KiB (2 MiB of its own stack
 * written) and then works on those frames; one on a stack carved from the
 * top of a 16 MiB arena (pthread_attr_setstack) whose lower 8 MiB hold its
 * data. Each round every thread sums its data and then changes all of it;
 * the main thread prints "round N" and the four sums. The output depends
 * only on the arguments: a restored run must print what an uninterrupted
 * one prints. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define FRAMES 32
#define FRAME_WORDS (64 * 1024 / 8)
#define ARENA (16u << 20)
#define ARENA_DATA (8u << 20)
#define ARENA_STACK (1u << 20)

static pthread_barrier_t go, done;
static uint64_t sums[4];
static volatile uint64_t *frames[FRAMES];
static volatile int quit; /* never set: keeps the recursion finite to the compiler */

static uint64_t step(uint64_t x) { return x * 6364136223846793005ull + 1442695040888963407ull; }

static uint64_t work(volatile uint64_t *w, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i < n; i++) {
    s = (s ^ w[i]) * 1099511628211ull;
    s ^= s >> 29;
    w[i] = step(w[i]);
  }
  return s;
}

static void *shallow(void *arg) {
  int k = (int)(intptr_t)arg;
  volatile uint64_t counter = 1000u * (uint64_t)(k + 1);
  for (;;) {
    pthread_barrier_wait(&go);
    counter = step(counter);
    sums[k] = counter;
    pthread_barrier_wait(&done);
  }
  return NULL;
}

static void deep_loop(void) {
  while (!quit) {
    pthread_barrier_wait(&go);
    uint64_t s = 0;
    for (int d = 0; d < FRAMES; d++) s = (s * 31) ^ work(frames[d], FRAME_WORDS);
    sums[2] = s;
    pthread_barrier_wait(&done);
  }
}

static __attribute__((noinline)) void deep(int d) {
  volatile uint64_t frame[FRAME_WORDS];
  for (size_t i = 0; i < FRAME_WORDS; i++) frame[i] = ((uint64_t)d << 32) | i;
  frames[d] = frame;
  if (d + 1 < FRAMES)
    deep(d + 1);
  else
    deep_loop();
  frame[0]++; /* not a tail call: the frame stays */
}

static void *deep_thread(void *arg) {
  (void)arg;
  deep(0);
  return NULL;
}

static void *arena_thread(void *arg) {
  volatile uint64_t *data = arg;
  for (size_t i = 0; i < ARENA_DATA / 8; i++) data[i] = i * 2654435761u;
  for (;;) {
    pthread_barrier_wait(&go);
    sums[3] = work(data, ARENA_DATA / 8);
    pthread_barrier_wait(&done);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: deep_stacks ROUNDS INTERVAL_MS\n");
    return 2;
  }
  int rounds = atoi(argv[1]);
  long ms = atol(argv[2]);
  setvbuf(stdout, NULL, _IOLBF, 0);
  pthread_barrier_init(&go, NULL, 5);
  pthread_barrier_init(&done, NULL, 5);
  pthread_t t[4];
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 8u << 20);
  for (int k = 0; k < 2; k++)
    if (pthread_create(&t[k], &attr, shallow, (void *)(intptr_t)k)) return 1;
  if (pthread_create(&t[2], &attr, deep_thread, NULL)) return 1;
  char *arena = mmap(NULL, ARENA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (arena == MAP_FAILED) return 1;
  pthread_attr_t carved;
  pthread_attr_init(&carved);
  pthread_attr_setstack(&carved, arena + ARENA - ARENA_STACK, ARENA_STACK);
  if (pthread_create(&t[3], &carved, arena_thread, arena)) return 1;
  printf("ready\n");
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  for (int r = 1; r <= rounds; r++) {
    pthread_barrier_wait(&go);
    pthread_barrier_wait(&done);
    printf("round %d %016llx %016llx %016llx %016llx\n", r, (unsigned long long)sums[0],
           (unsigned long long)sums[1], (unsigned long long)sums[2], (unsigned long long)sums[3]);
    nanosleep(&ts, NULL);
  }
  printf("done\n");
  return 0;
}
