/* A job that changes its private memory in every way a dump that reads it
 * before the stop has to catch up with at the stop. Each step it rewrites
 * 16 pages of a 32 MiB region (which ones depends on the step) and all of a
 * 1 MiB one, releases a run of 8 pages of the first (MADV_DONTNEED: zero
 * again), maps
 * or unmaps one of 8 small regions, grows its heap by a page (brk), splits
 * or joins a region by mprotect, and every 10 steps moves a region to a new
 * place one page longer (mremap); then it prints the step and a digest of
 * all that memory. Contents depend on the step only, so a restored run
 * prints what an uninterrupted one does.
 * Usage: memory_churn STEPS INTERVAL_MS */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "page_fill.h"

enum { kPage = 4096, kBig = 8192, kHot = 256, kSlots = 8, kSlotPages = 16,
       kHeapMax = 200, kSplitPages = 64, kMovedMax = 64 };

static void *map(size_t len) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    exit(1);
  }
  return p;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: memory_churn STEPS INTERVAL_MS\n");
    return 2;
  }
  const long steps = atol(argv[1]), interval_ms = atol(argv[2]);
  uint8_t *big = map((size_t)kBig * kPage);
  for (uint64_t p = 0; p < kBig; p += 2) fill(big + p * kPage, p, 0);  /* half never touched */
  uint8_t *hot = map((size_t)kHot * kPage);
  for (uint64_t p = 0; p < kHot; p++) fill(hot + p * kPage, 5000000 + p, 0);
  uint8_t *slot[kSlots] = {0};
  uint8_t *heap = sbrk(0);
  long heap_pages = 0;
  uint8_t *split = map((size_t)kSplitPages * kPage);
  for (uint64_t p = 0; p < kSplitPages; p++) fill(split + p * kPage, 3000000 + p, 0);
  long moved_pages = 4;
  uint8_t *moved = map((size_t)moved_pages * kPage);
  for (long p = 0; p < moved_pages; p++) fill(moved + p * kPage, 4000000 + (uint64_t)p, 0);

  for (long s = 1; s <= steps; s++) {
    for (uint64_t p = 0; p < kBig; p++)
      if (mix(p ^ ((uint64_t)s << 20)) % 512 == 0) fill(big + p * kPage, p, (uint64_t)s);
    for (uint64_t p = 0; p < kHot; p++) fill(hot + p * kPage, 5000000 + p, (uint64_t)s);
    madvise(big + (mix((uint64_t)s) % (kBig - 8)) * kPage, 8 * kPage, MADV_DONTNEED);
    const int k = (int)(s % kSlots);
    if (slot[k]) {
      munmap(slot[k], kSlotPages * kPage);
      slot[k] = NULL;
    } else {
      slot[k] = map(kSlotPages * kPage);
      for (int p = 0; p < kSlotPages; p++) fill(slot[k] + p * kPage, 1000000 + k * 100 + p, (uint64_t)s);
    }
    if (heap_pages < kHeapMax) {
      if (sbrk(kPage) == (void *)-1) {
        perror("sbrk");
        return 1;
      }
      fill(heap + heap_pages * kPage, 2000000 + (uint64_t)heap_pages, (uint64_t)s);
      heap_pages++;
    }
    /* A quarter of the split region read-only or writable again, in turn. */
    const int quarter = (int)(s % 4), ro = (int)((s / 4) % 2);
    uint8_t *q = split + quarter * (kSplitPages / 4) * kPage;
    mprotect(q, (kSplitPages / 4) * kPage, ro ? PROT_READ : PROT_READ | PROT_WRITE);
    if (!ro) fill(q, 3000000 + (uint64_t)quarter, (uint64_t)s);
    if (s % 10 == 0 && moved_pages < kMovedMax) {
      uint8_t *to = mremap(moved, (size_t)moved_pages * kPage, (size_t)(moved_pages + 1) * kPage,
                           MREMAP_MAYMOVE);
      if (to == MAP_FAILED) {
        perror("mremap");
        return 1;
      }
      moved = to;
      fill(moved + moved_pages * kPage, 4000000 + (uint64_t)moved_pages, (uint64_t)s);
      moved_pages++;
    }

    uint64_t h = 0xcbf29ce484222325ull;
    h = digest(h, big, (size_t)kBig * kPage);
    h = digest(h, hot, (size_t)kHot * kPage);
    for (int i = 0; i < kSlots; i++)
      if (slot[i]) h = digest(h, slot[i], kSlotPages * kPage);
    h = digest(h, heap, (size_t)heap_pages * kPage);
    h = digest(h, split, (size_t)kSplitPages * kPage);
    h = digest(h, moved, (size_t)moved_pages * kPage);
    char line[96];
    int n = snprintf(line, sizeof line, "step %ld digest %016llx\n", s, (unsigned long long)h);
    if (write(1, line, (size_t)n) != n) return 1;
    struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  return 0;
}
