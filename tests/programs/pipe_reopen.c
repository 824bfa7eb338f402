/* A pipe whose read end is opened a second time through /proc/self/fd: two
 * open file descriptions of one end, only the second non-blocking. Each
 * round writes a byte and reads it back through one description or the
 * other, and prints each description's O_NONBLOCK. A restored run prints
 * the same only if both descriptions came back, on the same pipe.
 * Usage: pipe_reopen LIMIT INTERVAL_MS */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  long limit = argc > 1 ? atol(argv[1]) : 10;
  long ms = argc > 2 ? atol(argv[2]) : 200;
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  setvbuf(stdout, NULL, _IOLBF, 0);
  int p[2];
  char path[64];
  if (pipe(p) < 0) return perror("pipe"), 1;
  snprintf(path, sizeof path, "/proc/self/fd/%d", p[0]);
  int again = open(path, O_RDONLY);
  if (again < 0 || fcntl(again, F_SETFL, O_NONBLOCK) < 0) return perror(path), 1;
  for (long i = 1; i <= limit; i++) {
    char c = (char)('a' + i % 26), got = 0;
    if (write(p[1], &c, 1) != 1) return perror("write"), 1;
    int from = i % 2 ? p[0] : again;
    if (read(from, &got, 1) != 1) return perror("read"), 1;
    printf("%ld: read %c via %s, nonblock %d %d\n", i, got, from == p[0] ? "pipe" : "reopened",
           !!(fcntl(p[0], F_GETFL) & O_NONBLOCK), !!(fcntl(again, F_GETFL) & O_NONBLOCK));
    nanosleep(&ts, NULL);
  }
  return 0;
}
