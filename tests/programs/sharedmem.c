/* A parent and a child sharing one MAP_SHARED anonymous region: the parent
 * fills SIZE_MIB with a pattern (page i holds the word i+1 everywhere), the
 * child checks it every tick; both print. The dump test checks the shared
 * pages are in the image. Usage: sharedmem SIZE_MIB TICKS INTERVAL_MS */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: sharedmem SIZE_MIB TICKS INTERVAL_MS\n"); return 2; }
  size_t pages = (size_t)atol(argv[1]) * 256;
  int ticks = atoi(argv[2]);
  long interval_ms = atol(argv[3]);
  uint64_t *mem = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 1;
  for (size_t p = 0; p < pages; p++)
    for (size_t i = 0; i < 512; i++) mem[p * 512 + i] = p + 1;
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
  pid_t child = fork();
  for (int t = 1; t <= ticks; t++) {
    if (child == 0) {
      size_t bad = 0;
      for (size_t p = 0; p < pages; p++) bad += mem[p * 512 + (t % 512)] != p + 1;
      printf("child tick %d %s\n", t, bad ? "CORRUPT" : "ok");
    }
    nanosleep(&ts, NULL);
  }
  if (child) waitpid(child, NULL, 0);
  return 0;
}
