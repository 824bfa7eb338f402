/* A job that rewrites all its memory, continuously: MiB of pages, each
 * holding its generation in its first word and, in the rest, words derived
 * from its index and generation; the job goes over every page again and
 * again, giving each a new generation and rewriting it whole. Every page can
 * be checked on its own, so the memory of any instant (a checkpoint's) checks
 * out. On SIGUSR2 it checks every page between two rewrites and prints
 * "verify ok PASSES" or "verify BAD PAGE"; on SIGTERM it exits 0. Prints
 * "ready" once filled.  Usage: rewrite_all MIB */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static volatile sig_atomic_t verify_req, stop_req;
static void on_usr2(int s) { (void)s; verify_req = 1; }
static void on_term(int s) { (void)s; stop_req = 1; }

enum { kPageWords = 4096 / 8 };

static uint64_t word(uint64_t page, uint64_t gen, uint64_t k) {
  uint64_t x = (page * 0x9e3779b97f4a7c15ull) ^ (gen * 0xbf58476d1ce4e5b9ull) ^ k;
  return x ^ (x >> 29);
}

static void fill(uint64_t *p, uint64_t page, uint64_t gen) {
  p[0] = gen;
  for (uint64_t k = 1; k < kPageWords; k++) p[k] = word(page, gen, k);
}

static long check(const uint64_t *mem, size_t pages) {
  for (size_t i = 0; i < pages; i++) {
    const uint64_t *p = mem + i * kPageWords;
    for (uint64_t k = 1; k < kPageWords; k++)
      if (p[k] != word(i, p[0], k)) return (long)i;
  }
  return -1;
}

int main(int argc, char **argv) {
  size_t pages = ((size_t)(argc > 1 ? atol(argv[1]) : 64) << 20) / 4096;
  uint64_t *mem = aligned_alloc(4096, pages * 4096);
  if (!mem) return 1;
  signal(SIGUSR2, on_usr2);
  signal(SIGTERM, on_term);
  for (size_t i = 0; i < pages; i++) fill(mem + i * kPageWords, i, 1);
  printf("ready\n");
  fflush(stdout);
  uint64_t passes = 0;
  for (;;) {
    for (size_t i = 0; i < pages; i++) {
      uint64_t *p = mem + i * kPageWords;
      fill(p, i, p[0] + 1);
      if (verify_req) {
        verify_req = 0;
        long bad = check(mem, pages);
        if (bad < 0)
          printf("verify ok %llu\n", (unsigned long long)passes);
        else
          printf("verify BAD %ld\n", bad);
        fflush(stdout);
      }
      if (stop_req) return 0;
    }
    passes++;
  }
}
