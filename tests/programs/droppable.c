/* Memory the kernel may empty (MAP_DROPPABLE) and memory a child gets
 * zeroed (MADV_WIPEONFORK), as caches and key material use them. Each round
 * it prints whether both regions still have their kind (smaps VmFlags "dp"
 * and "wf"), whether the wipe-on-fork data is intact in this process and
 * zero in a forked child, and whether the droppable region holds either its
 * data or zeros (nothing else is allowed).
 * Usage: droppable N INTERVAL_MS (exits 2 when the kernel lacks MAP_DROPPABLE) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif

static const char kData[] = "droppable / wipe-on-fork data";

static int has_vmflag(void *addr, const char *flag) {
  FILE *f = fopen("/proc/self/smaps", "r");
  char line[512];
  int in = 0, found = 0;
  unsigned long start, end, a = (unsigned long)addr;
  while (f && fgets(line, sizeof line, f)) {
    if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' '))
      in = start <= a && a < end;
    else if (in && strncmp(line, "VmFlags:", 8) == 0) {
      char want[8];
      snprintf(want, sizeof want, " %s", flag);
      found = strstr(line, want) != NULL;
    }
  }
  if (f) fclose(f);
  return found;
}

static int zero(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 10, ms = argc > 2 ? atol(argv[2]) : 100;
  setvbuf(stdout, NULL, _IOLBF, 0);
  char *dp = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_DROPPABLE | MAP_ANONYMOUS, -1, 0);
  if (dp == MAP_FAILED) return errno == EINVAL ? 2 : (perror("mmap droppable"), 1);
  char *wf = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (wf == MAP_FAILED || madvise(wf, 4096, MADV_WIPEONFORK)) return perror("wipeonfork"), 1;
  memcpy(dp, kData, sizeof kData);
  memcpy(wf, kData, sizeof kData);
  for (long i = 1; i <= n; i++) {
    pid_t c = fork();
    if (c == 0) _exit(zero(wf, sizeof kData) && zero(dp, sizeof kData) ? 0 : 1);
    int st = -1;
    waitpid(c, &st, 0);
    int dp_ok = memcmp(dp, kData, sizeof kData) == 0 || zero(dp, sizeof kData);
    printf("%ld dp=%d wf=%d data=%d child-zero=%d dp-data-or-zero=%d\n", i, has_vmflag(dp, "dp"),
           has_vmflag(wf, "wf"), memcmp(wf, kData, sizeof kData) == 0,
           WIFEXITED(st) && WEXITSTATUS(st) == 0, dp_ok);
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
  }
  return 0;
}
