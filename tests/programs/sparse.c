/* A sparse address space, as AddressSanitizer, Go, V8 and CUDA's unified
 * memory make one: a MAP_NORESERVE reservation of TIB tebibytes with PAGES
 * pages touched, spread over it, plus a 64 GiB PROT_NONE reservation.
 * Prints "ready", then each round checks every touched page's values,
 * changes them and prints the round's number; at the end checks that the
 * reservations are still what they were (NORESERVE: not populated, the
 * PROT_NONE range still PROT_NONE) and prints "done".
 * Usage: sparse TIB PAGES ROUNDS INTERVAL_MS. Exits 3 when the kernel refuses
 * the reservation (vm.overcommit_memory 2, or a small address space). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static uint64_t value(uint64_t page, long round) {
  uint64_t x = (page + 1) * 0x9e3779b97f4a7c15ull + (uint64_t)round;
  x ^= x >> 29;
  return x * 0xbf58476d1ce4e5b9ull;
}

/* This process's resident set, in KiB. */
static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) kib = atol(line + 6);
  if (f) fclose(f);
  return kib;
}

/* The /proc/self/maps permissions of the mapping holding addr, or "". */
static void perms_of(uintptr_t addr, char out[5]) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  out[0] = 0;
  while (f && fgets(line, sizeof line, f)) {
    unsigned long s, e;
    char p[5];
    if (sscanf(line, "%lx-%lx %4s", &s, &e, p) == 3 && s <= addr && addr < e) memcpy(out, p, 5);
  }
  if (f) fclose(f);
}

int main(int argc, char **argv) {
  if (argc < 5) return 2;
  uint64_t size = (uint64_t)atol(argv[1]) << 40;
  uint64_t pages = (uint64_t)atol(argv[2]);
  long rounds = atol(argv[3]), interval_ms = atol(argv[4]);
  struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
  setvbuf(stdout, NULL, _IOLBF, 0);
  uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
  if (base == MAP_FAILED) {
    perror("mmap of the reservation");
    return 3;
  }
  uint64_t guard_size = 64ull << 30;
  uint8_t *guard = mmap(NULL, guard_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (guard == MAP_FAILED) {
    perror("mmap of the PROT_NONE reservation");
    return 3;
  }
  uint64_t stride = size / pages / 4096 * 4096;
  for (uint64_t i = 0; i < pages; i++) {
    uint64_t *p = (uint64_t *)(base + i * stride + (i % 7) * 4096);
    p[0] = value(i, 0);
    p[511] = ~value(i, 0);
  }
  printf("ready\n");
  for (long r = 1; r <= rounds; r++) {
    for (uint64_t i = 0; i < pages; i++) {
      uint64_t *p = (uint64_t *)(base + i * stride + (i % 7) * 4096);
      if (p[0] != value(i, r - 1) || p[511] != ~value(i, r - 1)) {
        printf("BAD page %lu in round %ld\n", (unsigned long)i, r);
        return 1;
      }
      p[0] = value(i, r);
      p[511] = ~value(i, r);
    }
    printf("%ld\n", r);
    nanosleep(&ts, NULL);
  }
  char perms[5];
  perms_of((uintptr_t)guard + guard_size / 2, perms);
  if (strcmp(perms, "---p") != 0) {
    printf("BAD: the PROT_NONE reservation is now '%s'\n", perms);
    return 1;
  }
  perms_of((uintptr_t)base + size / 2, perms);
  if (strcmp(perms, "rw-p") != 0) {
    printf("BAD: the reservation is now '%s'\n", perms);
    return 1;
  }
  /* The touched pages and the program itself: far below 1 GiB. */
  long kib = rss_kib();
  if (kib > (1 << 20)) {
    printf("BAD: resident %ld KiB: the reservation was populated\n", kib);
    return 1;
  }
  printf("done\n");
  return 0;
}
