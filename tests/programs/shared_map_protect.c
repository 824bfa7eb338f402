/* A counter that keeps its count in a file mapped MAP_SHARED, read-only at
 * first, from a descriptor opened read-write and closed at once. Each line
 * makes the page writable with mprotect, counts, and makes it read-only
 * again: a restore that maps the file back from a read-only open (the
 * mapping was read-only at the dump) makes that mprotect fail (EACCES).
 * Each line shows the count as the file holds it (read through a new open).
 * Usage: shared_map_protect FILE LIMIT INTERVAL_MS */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: shared_map_protect FILE LIMIT INTERVAL_MS\n");
    return 2;
  }
  int limit = atoi(argv[2]);
  long ms = atol(argv[3]);
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  setvbuf(stdout, NULL, _IOLBF, 0);
  int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || ftruncate(fd, 4096) != 0) return 1;
  volatile int *count = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
  if (count == MAP_FAILED) return 1;
  close(fd);
  for (int i = 1; i <= limit; i++) {
    if (mprotect((void *)count, 4096, PROT_READ | PROT_WRITE) != 0) {
      printf("%d: mprotect read-write failed: %s\n", i, strerror(errno));
      return 1;
    }
    *count = i;
    mprotect((void *)count, 4096, PROT_READ);
    int in_file = -1;
    int rd = open(argv[1], O_RDONLY);
    if (rd < 0 || pread(rd, &in_file, sizeof in_file, 0) != sizeof in_file) in_file = -1;
    if (rd >= 0) close(rd);
    printf("%d: file holds %d\n", i, in_file);
    nanosleep(&ts, NULL);
  }
  return 0;
}
