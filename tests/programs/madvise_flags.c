/* A counter whose mappings carry advice and locks: each line shows, per
 * mapping, the VmFlags of /proc/self/smaps that madvise(), mlock2() and
 * mmap() flags set, and a checksum of its contents, so a restored run
 * prints the same lines only if they came back. A kind the kernel does not
 * offer (MAP_DROPPABLE before Linux 6.11, KSM not built) prints as it is,
 * in an uninterrupted run too. MAP_DROPPABLE memory may lose its contents
 * at any time (a restore drops it): it is checked to be intact or zero.
 * Usage: madvise_flags LIMIT INTERVAL_MS */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define SIZE (4 * 4096)

static const char *const kFlags[] = {"lo", "lf", "nr", "dp", "sr", "rr", "dc",
                                     "dd", "mg", "hg", "nh", "wf"};

/* The flags of kFlags that the mapping at `start` has, in kFlags' order. */
static void flags_of(void *start, char *out, size_t size) {
  FILE *f = fopen("/proc/self/smaps", "r");
  char line[1024];
  int here = 0;
  snprintf(out, size, "none");
  if (!f) return;
  while (fgets(line, sizeof line, f)) {
    unsigned long a, b;
    if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      here = a == (unsigned long)start;
      continue;
    }
    if (!here || strncmp(line, "VmFlags:", 8)) continue;
    size_t n = 0;
    out[0] = 0;
    for (size_t i = 0; i < sizeof kFlags / sizeof kFlags[0]; i++) {
      char word[8];
      snprintf(word, sizeof word, " %s", kFlags[i]);
      char *at = strstr(line + 8, word);
      if (at && (at[3] == ' ' || at[3] == '\n'))
        n += (size_t)snprintf(out + n, size - n, "%s%s", n ? "," : "", kFlags[i]);
    }
    if (!n) snprintf(out, size, "-");
    break;
  }
  fclose(f);
}

struct region {
  const char *name;
  int flags, advice, lock;  /* lock: 1 mlock2, 2 mlock2 on fault */
  char *at;
};

int main(int argc, char **argv) {
  long limit = argc > 1 ? atol(argv[1]) : 10;
  long ms = argc > 2 ? atol(argv[2]) : 200;
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct region r[] = {
      {"dontfork", MAP_PRIVATE, MADV_DONTFORK, 0, NULL},
      {"locked", MAP_PRIVATE | MAP_LOCKED, MADV_SEQUENTIAL, 0, NULL},
      {"noreserve", MAP_PRIVATE | MAP_NORESERVE, MADV_DONTDUMP, 0, NULL},
      {"hugepage", MAP_PRIVATE, MADV_HUGEPAGE, 0, NULL},
      {"nohugepage", MAP_PRIVATE, MADV_NOHUGEPAGE, 0, NULL},
      {"mergeable", MAP_PRIVATE, MADV_MERGEABLE, 0, NULL},
      {"wipeonfork", MAP_PRIVATE, MADV_WIPEONFORK, 0, NULL},
      {"random", MAP_PRIVATE, MADV_RANDOM, 1, NULL},
      {"onfault", MAP_PRIVATE, MADV_NORMAL, 2, NULL},
      {"droppable", 0x08 /* MAP_DROPPABLE */, MADV_NORMAL, 0, NULL},
  };
  size_t n = sizeof r / sizeof r[0];
  for (size_t i = 0; i < n; i++) {
    void *p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, r[i].flags | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) continue;  /* not offered here */
    r[i].at = p;
    madvise(p, SIZE, r[i].advice);
    if (r[i].lock) mlock2(p, SIZE, r[i].lock == 2 ? MLOCK_ONFAULT : 0);
    memset(p, (int)('a' + i), SIZE / 2);
  }
  for (long k = 1; k <= limit; k++) {
    char line[4096];
    size_t len = (size_t)snprintf(line, sizeof line, "%ld:", k);
    for (size_t i = 0; i < n; i++) {
      char flags[64] = "absent";
      uint32_t sum = 0;
      if (r[i].at) {
        flags_of(r[i].at, flags, sizeof flags);
        if (r[i].flags == 0x08) {  /* the kernel may drop its pages: kept or zero */
          int kept = 1, zero = 1;
          for (size_t b = 0; b < SIZE / 2; b++) {
            kept &= r[i].at[b] == (char)('a' + i);
            zero &= r[i].at[b] == 0;
          }
          len += (size_t)snprintf(line + len, sizeof line - len, " %s=%s/%s", r[i].name, flags,
                                  kept || zero ? "kept-or-dropped" : "GARBLED");
          continue;
        }
        for (size_t b = 0; b < SIZE; b++) sum = sum * 31 + (uint8_t)r[i].at[b];
        r[i].at[k % SIZE] ^= 1;  /* changes each round */
        sum ^= (uint32_t)r[i].at[k % SIZE];
      }
      len += (size_t)snprintf(line + len, sizeof line - len, " %s=%s/%08x", r[i].name, flags, sum);
    }
    puts(line);
    nanosleep(&ts, NULL);
  }
  return 0;
}
