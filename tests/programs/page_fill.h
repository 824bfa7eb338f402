/* Page contents that depend only on a page's id and a step, and a digest
 * of memory, for the test programs that check a restored run against an
 * uninterrupted one (memory_churn.c, arenas.c). */
#ifndef SNAP_TESTS_PAGE_FILL_H
#define SNAP_TESTS_PAGE_FILL_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t mix(uint64_t x) {
  x ^= x >> 31;
  x *= 0x9e3779b97f4a7c15ull;
  x ^= x >> 29;
  x *= 0xbf58476d1ce4e5b9ull;
  return x ^ (x >> 32);
}

/* The 4096 bytes at `page`, as page `id` holds them at `step`. */
static inline void fill(uint8_t *page, uint64_t id, uint64_t step) {
  uint64_t *w = (uint64_t *)page;
  for (int k = 0; k < 4096 / 8; k++) w[k] = mix(id * 1000003u + step * 7919u + (uint64_t)k);
}

/* `h` carried over the `len` bytes at `p` (FNV-1a over 8-byte words). */
static inline uint64_t digest(uint64_t h, const uint8_t *p, size_t len) {
  const uint64_t *w = (const uint64_t *)p;
  for (size_t k = 0; k < len / 8; k++) h = (h ^ w[k]) * 0x100000001b3ull;
  return h;
}

#endif
