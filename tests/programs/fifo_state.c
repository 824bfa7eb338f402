/* A FIFO opened O_RDWR holding data the job wrote into it before the loop,
 * and a pipe grown to 1 MiB with O_NONBLOCK, an owner (F_SETOWN, the job
 * itself) and a signal (F_SETSIG) on its read end. Each round
 * reads one byte of the FIFO and prints it with the pipe's size and the
 * read end's flag, owner and signal: a restored run must print what an uninterrupted
 * one does (the FIFO's unread bytes and the pipe's state come back).
 * Usage: fifo_state LIMIT INTERVAL_MS FIFO_PATH */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  perror(what);
  exit(1);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 4) return 2;
  long limit = atol(argv[1]), ms = atol(argv[2]);
  if (mkfifo(argv[3], 0600) < 0) die("mkfifo");
  int fifo = open(argv[3], O_RDWR);
  if (fifo < 0) die("open fifo");
  char data[64];
  for (int i = 0; i < 64; i++) data[i] = (char)('a' + i % 26);
  if (write(fifo, data, sizeof data) != sizeof data) die("write fifo");
  int p[2];
  if (pipe(p) < 0 || fcntl(p[1], F_SETPIPE_SZ, 1 << 20) < 0 ||
      fcntl(p[0], F_SETFL, O_NONBLOCK) < 0 || fcntl(p[0], F_SETOWN, getpid()) < 0 ||
      fcntl(p[0], F_SETSIG, SIGUSR2) < 0)
    die("pipe");
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  for (long i = 1; i <= limit; i++) {
    char c;
    if (read(fifo, &c, 1) != 1) die("read fifo");
    printf("%ld: fifo %c, pipe size %d, nonblock %d, owner self %d, signal %d\n", i, c,
           fcntl(p[0], F_GETPIPE_SZ), (fcntl(p[0], F_GETFL) & O_NONBLOCK) != 0,
           fcntl(p[0], F_GETOWN) == getpid(), fcntl(p[0], F_GETSIG));
    nanosleep(&ts, NULL);
  }
  return 0;
}
