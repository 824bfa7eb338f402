/* A job whose changes between checkpoints are known: MiB of random memory;
 * on SIGUSR1 it rewrites 1 % of its pages (every 100th) with new random data
 * and prints "rewrote N"; on SIGUSR2 it checks all its memory against the
 * checksum it kept and prints "verify ok" or "verify BAD"; on SIGTERM it
 * exits 0. Prints "ready" once filled.  Usage: rewrite MIB */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t rewrite_req, verify_req, stop_req;
static void on_usr1(int s) { (void)s; rewrite_req = 1; }
static void on_usr2(int s) { (void)s; verify_req = 1; }
static void on_term(int s) { (void)s; stop_req = 1; }

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

int main(int argc, char **argv) {
  size_t bytes = (size_t)(argc > 1 ? atol(argv[1]) : 64) << 20;
  size_t words = bytes / 8, page_words = 4096 / 8, pages = bytes / 4096;
  uint64_t *mem = aligned_alloc(4096, bytes), sum = 0;  /* pages are pages */
  if (!mem) return 1;
  for (size_t i = 0; i < words; i++) sum += (mem[i] = next());
  signal(SIGUSR1, on_usr1);
  signal(SIGUSR2, on_usr2);
  signal(SIGTERM, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready\n");
  struct timespec ts = {0, 20 * 1000000L};
  for (int round = 1; !stop_req; ) {
    if (rewrite_req) {
      rewrite_req = 0;
      size_t n = 0;
      for (size_t p = (size_t)round % 100; p < pages; p += 100, n++)
        for (size_t w = p * page_words; w < (p + 1) * page_words; w++) {
          sum -= mem[w];
          sum += (mem[w] = next());
        }
      printf("rewrote %zu pages\n", n);
      round++;
    }
    if (verify_req) {
      verify_req = 0;
      uint64_t s = 0;
      for (size_t i = 0; i < words; i++) s += mem[i];
      printf("verify %s\n", s == sum ? "ok" : "BAD");
    }
    nanosleep(&ts, NULL);
  }
  return 0;
}
