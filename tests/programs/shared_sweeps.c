/* Anonymous shared memory rewritten while it is being dumped: a writer
 * sweeps over MIB of MAP_SHARED | MAP_ANONYMOUS memory, raising the first
 * and last word of each page from g-1 to g in sweep g, page after page. At
 * any instant the memory is then "pages [0, k) hold g, the rest g-1" for
 * the writer's own (g, k), and the writer checks exactly that: the whole
 * memory before each sweep, each page before it raises it. A dump whose
 * image mixes pages from different instants comes back CORRUPT.
 *
 * Usage: shared_sweeps MIB SWEEPS MODE
 *   MODE one:   one child does every sweep
 *        fork:  the parent forks a new child for each sweep (so children
 *               forked while a dump reads the memory write it too)
 *        remap: as one, and the child moves its mapping of the memory
 *               (mremap) to another address after each sweep
 *        remap-tail: the child moves all of its mapping but the first page
 *               to another address every 64 pages it writes (so the mapping
 *               is split, and the part at an offset moves mid-sweep)
 *        split: as one, and the parent unmaps the first half of its own
 *               mapping once the child runs (so each process maps a part
 *               of the memory the other does not)
 *        dontfork: as one, and the parent marks its own mapping
 *               MADV_DONTFORK once the child runs
 *        punch: as one, and the writer frees each page (MADV_REMOVE: it
 *               reads as zeros) right before it raises it
 *        file:  as one, the memory a file in /dev/shm (POSIX shared memory,
 *               as MPI's shared-memory transports and Python's
 *               multiprocessing.shared_memory make), removed at the end
 *        file-write: as file, and the writer raises the first page of
 *               every 64 with pwrite(2) on the file, not through memory
 *        tmpfile: as file, the file in $TMPDIR (or /tmp), as PMIx keeps its
 *               shared segments in its session directory
 * Prints "ready", "sweep N" every 20 sweeps, then "done"; exit status 1
 * with "CORRUPT ..." on the first wrong page. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WORDS 512 /* per 4 KiB page */

static uint64_t *mem;
static size_t pages;
/* The writer's view: pages from `tail_from` on may live elsewhere (remap-tail). */
static uint64_t *upper;
static size_t tail_from = 1;
static int punch;
static int file_fd = -1; /* file-write: the file, written with pwrite */

static uint64_t *page_at(size_t p) {
  return p < tail_from ? mem + p * WORDS : upper + (p - tail_from) * WORDS;
}

static void say(const char *fmt, long a, long b, long c) {
  char line[160];
  int n = snprintf(line, sizeof line, fmt, a, b, c);
  if (write(1, line, (size_t)n) != n) _exit(3);
}

/* remap and remap-tail: moves the writer's mapping (or its tail) to `away`
 * and back, each call the other way. */
static int moves, tail_moves;
static void *away;

static void move(void) {
  uint64_t **moving = tail_moves ? &upper : &mem;
  size_t bytes = (tail_moves ? pages - tail_from : pages) * 4096;
  void *was = *moving;
  void *to = mremap(was, bytes, bytes, MREMAP_MAYMOVE | MREMAP_FIXED, away);
  if (to == MAP_FAILED) _exit(1);
  *moving = to;
  if (!tail_moves) upper = mem + tail_from * WORDS;
  away = was;
}

static void corrupt(long page, long got, long want) {
  say("CORRUPT page %ld holds %ld, expected %ld\n", page, got, want);
  _exit(1);
}

/* Sweep g: every page from g-1 to g, with a short sleep every 64 pages so a
 * sweep lasts a few milliseconds. */
static void sweep(uint64_t g) {
  for (size_t p = 0; p < pages; p++)
    if (page_at(p)[0] != g - 1 || page_at(p)[WORDS - 1] != g - 1)
      corrupt((long)p, (long)page_at(p)[0], (long)(g - 1));
  struct timespec pause = {0, 20000};
  for (size_t p = 0; p < pages; p++) {
    uint64_t *w = page_at(p);
    if (w[0] != g - 1 || w[WORDS - 1] != g - 1) corrupt((long)p, (long)w[0], (long)(g - 1));
    if (punch && (madvise(w, 4096, MADV_REMOVE) || w[0] != 0)) _exit(1);
    if (file_fd >= 0 && p % 64 == 0) {
      off_t at = (off_t)p * 4096;
      if (pwrite(file_fd, &g, sizeof g, at) != sizeof g ||
          pwrite(file_fd, &g, sizeof g, at + 4096 - sizeof g) != sizeof g)
        _exit(1);
      continue;
    }
    w[0] = g;
    w[WORDS - 1] = g;
    if (p % 64 == 63) {
      if (tail_moves) move();
      nanosleep(&pause, NULL);
    }
  }
  if (g % 20 == 0) say("sweep %ld\n", (long)g, 0, 0);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: shared_sweeps MIB SWEEPS MODE\n");
    return 2;
  }
  pages = (size_t)atol(argv[1]) * 256;
  uint64_t sweeps = (uint64_t)atol(argv[2]);
  int fork_each = strcmp(argv[3], "fork") == 0, remap = strcmp(argv[3], "remap") == 0;
  int remap_tail = strcmp(argv[3], "remap-tail") == 0;
  int split = strcmp(argv[3], "split") == 0, dontfork = strcmp(argv[3], "dontfork") == 0;
  punch = strcmp(argv[3], "punch") == 0;
  size_t first = 0; /* the parent's first mapped page at the end */
  int tmpfile = strcmp(argv[3], "tmpfile") == 0;
  int in_file = strcmp(argv[3], "file") == 0 || strcmp(argv[3], "file-write") == 0 || tmpfile;
  const char *tmp = getenv("TMPDIR");
  char name[4096];
  snprintf(name, sizeof name, "%s/shared_sweeps.%d",
           tmpfile ? (tmp && *tmp ? tmp : "/tmp") : "/dev/shm", (int)getpid());
  if (in_file) {
    int fd = open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)(pages * 4096))) return 1;
    mem = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (strcmp(argv[3], "file-write") == 0) file_fd = fd;
    else close(fd);
  } else {
    mem = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  }
  if (mem == MAP_FAILED) return 1;
  upper = mem + tail_from * WORDS;
  for (size_t p = 0; p < pages; p++) mem[p * WORDS] = mem[p * WORDS + WORDS - 1] = 0;
  say("ready\n", 0, 0, 0);
  if (!fork_each) {
    pid_t c = fork();
    if (c == 0) {
      /* The moving part alternates between where it was mapped and a
       * reservation of its size. */
      size_t bytes = remap_tail ? (pages - tail_from) * 4096 : pages * 4096;
      moves = remap;
      tail_moves = remap_tail;
      if (moves || tail_moves) {
        away = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (away == MAP_FAILED) _exit(1);
      }
      for (uint64_t g = 1; g <= sweeps; g++) {
        sweep(g);
        if (moves) move();
      }
      _exit(0);
    }
    if (split) {
      first = pages / 2;
      if (munmap(mem, first * 4096)) return 1;
    }
    if (dontfork && madvise(mem, pages * 4096, MADV_DONTFORK)) return 1;
    int st;
    if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st)) {
      if (in_file) unlink(name);
      return 1;
    }
  } else {
    for (uint64_t g = 1; g <= sweeps; g++) {
      pid_t c = fork();
      if (c == 0) {
        sweep(g);
        _exit(0);
      }
      int st;
      if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st)) return 1;
    }
  }
  if (in_file) unlink(name);
  for (size_t p = first; p < pages; p++)
    if (mem[p * WORDS] != sweeps) corrupt((long)p, (long)mem[p * WORDS], (long)sweeps);
  say("done\n", 0, 0, 0);
  return 0;
}
