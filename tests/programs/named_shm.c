/* A job keeping its state in POSIX shared memory (shm_open, as MPI's
 * shared-memory transports do): NAME in /dev/shm, MIB MiB, mapped
 * MAP_SHARED by the process and by a child it forks, and kept open. Each
 * tick the parent changes one page's first word from the one before it and
 * folds it into a hash it keeps in private memory, the child (one tick
 * later) checks what the parent wrote, and the parent prints the hash and a
 * word it reads back through its fd. So a restore whose file is not the
 * one at the dump (gone, or rewritten since) prints other numbers. At the
 * end the segment is unlinked (as MPI_Finalize does).
 * Usage: named_shm NAME MIB TICKS INTERVAL_MS
 * Prints "ready", "tick T HASH WORD SIZE" per tick, "done"; exit status 1 with
 * "CORRUPT ..." when the child finds another value than the parent wrote. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WORDS 512 /* per 4 KiB page */

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: named_shm NAME MIB TICKS INTERVAL_MS\n");
    return 2;
  }
  const char *name = argv[1];
  size_t pages = (size_t)atol(argv[2]) * 256;
  int ticks = atoi(argv[3]);
  long ms = atol(argv[4]);
  /* 8 bytes more than whole pages, as Open MPI's segments are: the size
   * (printed each tick) must come back exact. */
  const size_t bytes = pages * 4096 + 8;
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0 || ftruncate(fd, (off_t)bytes)) return 1;
  uint64_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mem == MAP_FAILED) return 1;
  for (size_t p = 0; p < pages; p++) mem[p * WORDS] = p * 2654435761u;
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
  /* The parent's last write, for the child: the tick in the 8 bytes past
   * the whole pages, the value in the word before them. */
  uint64_t *tick_at = &mem[pages * WORDS], *value_at = &mem[pages * WORDS - 1];
  pid_t child = fork();
  if (child == 0) {
    uint64_t seen = 0;
    for (;;) {
      /* The parent sets the tick to 0 before it writes, so the same tick
       * read before and after means nothing was written in between. */
      uint64_t t = __atomic_load_n(tick_at, __ATOMIC_ACQUIRE);
      if (t != seen && t > 0) {
        size_t p = (t * 13) % (pages - 1);
        uint64_t want = __atomic_load_n(value_at, __ATOMIC_ACQUIRE);
        uint64_t got = __atomic_load_n(&mem[p * WORDS], __ATOMIC_ACQUIRE);
        if (__atomic_load_n(tick_at, __ATOMIC_ACQUIRE) != t) continue;
        if (got != want) {
          printf("CORRUPT tick %lu page %zu\n", (unsigned long)t, p);
          _exit(1);
        }
        seen = t;
      }
      nanosleep(&pause, NULL);
    }
  }
  printf("ready\n");
  uint64_t hash = 0;
  for (int t = 1; t <= ticks; t++) {
    size_t p = ((size_t)t * 13) % (pages - 1), q = ((size_t)t * 7) % (pages - 1);
    uint64_t v = mem[p * WORDS] * 31 + mem[((p + pages - 2) % (pages - 1)) * WORDS] + (uint64_t)t;
    __atomic_store_n(tick_at, 0, __ATOMIC_RELEASE);
    __atomic_store_n(value_at, v, __ATOMIC_RELEASE);
    __atomic_store_n(&mem[p * WORDS], v, __ATOMIC_RELEASE);
    __atomic_store_n(tick_at, (uint64_t)t, __ATOMIC_RELEASE);
    hash = hash * 1099511628211u ^ v;
    uint64_t word = 0;
    struct stat st;
    if (pread(fd, &word, sizeof word, (off_t)(q * 4096)) != sizeof word || fstat(fd, &st)) return 1;
    printf("tick %d %016lx %016lx %ld\n", t, (unsigned long)hash, (unsigned long)word,
           (long)st.st_size);
    nanosleep(&pause, NULL);
  }
  kill(child, SIGKILL);
  int st;
  waitpid(child, &st, 0);
  if (WIFEXITED(st) && WEXITSTATUS(st)) return 1;
  shm_unlink(name);
  printf("done\n");
  return 0;
}
