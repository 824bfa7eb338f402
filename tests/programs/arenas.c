/* Private memory in mappings of its own with only unmapped holes between
 * them, as Python's arenas or an allocator's large blocks lie: six regions
 * of 128 pages, each between holes, and a small region of one page between
 * the third and the fourth. Each step rewrites one page of one region
 * (which ones depends on the step) and the small region's page, then
 * prints the step and a digest of all that memory. Contents depend on the
 * step only, so a restored run prints what an uninterrupted one does.
 * Usage: arenas STEPS INTERVAL_MS */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "page_fill.h"

enum { kPage = 4096, kRegionPages = 128, kRegions = 6, kSlots = 14 };

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: arenas STEPS INTERVAL_MS\n");
    return 2;
  }
  const long steps = atol(argv[1]), interval_ms = atol(argv[2]);
  const size_t slot = (size_t)kRegionPages * kPage;
  // Slots of 128 pages: regions in 0, 2, 4 and 8, 10, 12, the small one at
  // the start of 6; the rest unmapped.
  uint8_t *span = mmap(NULL, kSlots * slot, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
  if (span == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  munmap(span, kSlots * slot);
  static const int where[kRegions] = {0, 2, 4, 8, 10, 12};
  uint8_t *region[kRegions];
  for (int i = 0; i < kRegions; i++) {
    region[i] = mmap(span + where[i] * slot, slot, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (region[i] == MAP_FAILED) {
      perror("mmap region");
      return 1;
    }
    for (int p = 0; p < kRegionPages; p++) fill(region[i] + (size_t)p * kPage, (uint64_t)(i * 1000 + p), 0);
  }
  uint8_t *small = mmap(span + 6 * slot, kPage, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (small == MAP_FAILED) {
    perror("mmap small");
    return 1;
  }
  fill(small, 999999, 0);
  const struct timespec pause = {interval_ms / 1000, (interval_ms % 1000) * 1000000};
  for (long s = 1; s <= steps; s++) {
    const int i = (int)(s % kRegions), p = (int)((s * 7) % kRegionPages);
    fill(region[i] + (size_t)p * kPage, (uint64_t)(i * 1000 + p), (uint64_t)s);
    fill(small, 999999, (uint64_t)s);
    uint64_t h = 0xcbf29ce484222325ull;
    for (int r = 0; r < kRegions; r++) h = digest(h, region[r], slot);
    h = digest(h, small, kPage);
    printf("step %ld digest %016llx\n", s, (unsigned long long)h);
    fflush(stdout);
    nanosleep(&pause, NULL);
  }
  return 0;
}
