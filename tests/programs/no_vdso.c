/* A process that unmaps its vDSO (as some sandboxes and checkers do), then
 * counts, checking each round that no [vdso] or [vvar] came back. It only
 * uses plain system calls afterwards (glibc's time functions would jump into
 * the vDSO). Prints "I absent" per round, "I vdso back" if it reappeared.
 * Usage: no_vdso N INTERVAL_MS */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static char maps[1 << 16];

static size_t read_maps(void) {
  int fd = open("/proc/self/maps", O_RDONLY);
  size_t n = 0;
  ssize_t r;
  if (fd < 0) return 0;
  while (n < sizeof maps - 1 && (r = read(fd, maps + n, sizeof maps - 1 - n)) > 0) n += (size_t)r;
  close(fd);
  maps[n] = 0;
  return n;
}

static int unmap_kernel_blobs(void) {
  read_maps();
  int found = 0;
  unsigned long ranges[8][2];
  for (char *line = maps; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
    char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    if ((memmem(line, len, "[vdso]", 6) || memmem(line, len, "[vvar", 5)) && found < 8 &&
        sscanf(line, "%lx-%lx", &ranges[found][0], &ranges[found][1]) == 2)
      found++;
  }
  for (int i = 0; i < found; i++)
    if (syscall(SYS_munmap, ranges[i][0], ranges[i][1] - ranges[i][0])) return -1;
  return found;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 10, ms = argc > 2 ? atol(argv[2]) : 100;
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (unmap_kernel_blobs() <= 0) return perror("unmapping the vDSO"), 1;
  for (long i = 1; i <= n; i++) {
    read_maps();
    int back = strstr(maps, "[vdso]") || strstr(maps, "[vvar");
    printf("%ld %s\n", i, back ? "vdso back" : "absent");
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    syscall(SYS_nanosleep, &t, NULL);
  }
  return 0;
}
