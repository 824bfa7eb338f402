/* A job whose many open files keep changing while it runs: N separate
 * opens of one data file (byte i of it is i % 251), each fd's offset a
 * step further every round (one byte read from each); close-on-exec set
 * for good on every third fd (the first among them), O_NONBLOCK and
 * close-on-exec flipped every round on the ones after those. Each round
 * checks every fd against what the program's memory expects (the byte
 * read, F_GETFL, F_GETFD) and prints "R ok", or "R BAD fd F: WHAT" for the
 * first fd that differs: a checkpoint whose offsets or flags are not those
 * of the moment its memory was taken, or a restore that does not bring
 * them back, shows as BAD.
 * Usage: fd_offsets DATAFILE N ROUNDS MS */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 5) return 2;
  const char *path = argv[1];
  int n = atoi(argv[2]), rounds = atoi(argv[3]), ms = atoi(argv[4]);
  struct rlimit r;
  getrlimit(RLIMIT_NOFILE, &r);
  if (r.rlim_max < (rlim_t)n + 100) return 3;
  r.rlim_cur = (rlim_t)n + 100;
  setrlimit(RLIMIT_NOFILE, &r);
  FILE *data = fopen(path, "w");
  if (!data) { perror("fopen"); return 1; }
  for (int i = 0; i < 4096; i++) fputc(i % 251, data);
  fclose(data);
  int *fds = calloc((size_t)n, sizeof *fds);
  if (!fds) return 1;
  for (int k = 0; k < n; k++) {
    fds[k] = open(path, O_RDONLY);
    if (fds[k] < 0) { perror("open"); return 1; }
    /* Different starting offsets: fd k starts at k % 1000. */
    if (lseek(fds[k], k % 1000, SEEK_SET) < 0) { perror("lseek"); return 1; }
    /* Every third fd, the first among them, is close-on-exec for good. */
    if (k % 3 == 0 && fcntl(fds[k], F_SETFD, FD_CLOEXEC) < 0) { perror("fcntl"); return 1; }
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
  for (int round = 1; round <= rounds; round++) {
    const char *bad = NULL;
    int bad_fd = -1;
    for (int k = 0; k < n && !bad; k++) {
      long want = (k % 1000) + round - 1;
      unsigned char c;
      if (read(fds[k], &c, 1) != 1 || c != want % 251) bad = "offset", bad_fd = fds[k];
      if (!bad && k % 3 == 0 && !(fcntl(fds[k], F_GETFD) & FD_CLOEXEC))
        bad = "FD_CLOEXEC kept", bad_fd = fds[k];
      if (k % 3 != 1) continue;
      /* Flags as the previous round left them, then flipped. */
      int odd = (round - 1) % 2;
      int fl = fcntl(fds[k], F_GETFL), fd_flags = fcntl(fds[k], F_GETFD);
      if (!bad && !!(fl & O_NONBLOCK) != odd) bad = "O_NONBLOCK", bad_fd = fds[k];
      if (!bad && !!(fd_flags & FD_CLOEXEC) != odd) bad = "FD_CLOEXEC", bad_fd = fds[k];
      fcntl(fds[k], F_SETFL, odd ? fl & ~O_NONBLOCK : fl | O_NONBLOCK);
      fcntl(fds[k], F_SETFD, odd ? 0 : FD_CLOEXEC);
    }
    if (bad)
      printf("%d BAD fd %d: %s\n", round, bad_fd, bad);
    else
      printf("%d ok\n", round);
    nanosleep(&pause, NULL);
  }
  return 0;
}
