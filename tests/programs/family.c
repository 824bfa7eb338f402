/* A parent and a child that share three things a restore of a process tree
 * must rebuild as shared: a connected stream socketpair, a MAP_SHARED
 * anonymous counter, and one open file description (LOG, opened once before
 * the fork without O_APPEND, so both write at one shared offset).
 *
 * Round n (strict alternation, so everything is deterministic):
 *   parent: counter 2n-2 -> 2n-1, sends "ping n", waits for the answer;
 *   child:  sleeps INTERVAL_MS (the ping waits unread in its socket), reads
 *           it, checks counter == 2n-1, sets 2n, appends "child n" to LOG,
 *           prints, answers "pong n";
 *   parent: checks the pong and counter == 2n, appends "parent n", prints.
 * At the end the parent checks the child's exit status, the counter and the
 * whole of LOG (had the two descriptions been split, their lines would
 * overwrite each other) and prints a verdict line.
 * Usage: family ROUNDS INTERVAL_MS LOG */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { MSG = 32 };

static void die(const char *what) {
  fprintf(stderr, "family: %s: %s\n", what, strerror(errno));
  exit(3);
}

static void send_msg(int fd, const char *text) {
  char buf[MSG] = {0};
  snprintf(buf, sizeof buf, "%s", text);
  size_t done = 0;
  while (done < MSG) {
    ssize_t n = write(fd, buf + done, MSG - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die("write to the socket");
    done += (size_t)n;
  }
}

/* Reads one fixed-size message; returns 0 at end of stream. */
static int recv_msg(int fd, char *buf) {
  size_t done = 0;
  while (done < MSG) {
    ssize_t n = read(fd, buf + done, MSG - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("read from the socket");
    if (n == 0) {
      if (done == 0) return 0;
      fprintf(stderr, "family: short message\n");
      exit(3);
    }
    done += (size_t)n;
  }
  buf[MSG - 1] = 0;
  return 1;
}

static void log_line(int fd, const char *who, int n) {
  char line[64];
  int len = snprintf(line, sizeof line, "%s %d\n", who, n);
  if (write(fd, line, (size_t)len) != len) die("write to the log");
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: family ROUNDS INTERVAL_MS LOG\n");
    return 2;
  }
  int rounds = atoi(argv[1]);
  long interval_ms = atol(argv[2]);
  struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
  setvbuf(stdout, NULL, _IOLBF, 0);

  volatile long *counter =
      mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (counter == MAP_FAILED) die("mmap");
  int log = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);  /* no O_APPEND */
  if (log < 0) die(argv[3]);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) die("socketpair");
  printf("family: %d rounds\n", rounds);
  fflush(stdout);

  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    close(sv[0]);
    char msg[MSG], want[MSG];
    int n = 0;
    for (;;) {
      nanosleep(&ts, NULL);
      if (!recv_msg(sv[1], msg)) break;
      if (strcmp(msg, "quit") == 0) break;
      n++;
      snprintf(want, sizeof want, "ping %d", n);
      long c = *counter;
      printf("child: got %s, counter %ld %s\n", msg, c,
             strcmp(msg, want) == 0 && c == 2L * n - 1 ? "ok" : "WRONG");
      *counter = c + 1;
      log_line(log, "child", n);
      snprintf(want, sizeof want, "pong %d", n);
      send_msg(sv[1], want);
    }
    _exit(n == rounds ? 0 : 1);
  }

  close(sv[1]);
  int bad = 0;
  char msg[MSG], want[MSG];
  for (int n = 1; n <= rounds; n++) {
    *counter = *counter + 1;
    snprintf(want, sizeof want, "ping %d", n);
    send_msg(sv[0], want);
    if (!recv_msg(sv[0], msg)) {
      printf("parent: the child closed the socket in round %d\n", n);
      bad = 1;
      break;
    }
    snprintf(want, sizeof want, "pong %d", n);
    long c = *counter;
    int ok = strcmp(msg, want) == 0 && c == 2L * n;
    bad |= !ok;
    printf("parent: got %s, counter %ld %s\n", msg, c, ok ? "ok" : "WRONG");
    log_line(log, "parent", n);
  }
  send_msg(sv[0], "quit");
  int st = 0;
  if (waitpid(child, &st, 0) != child) die("waitpid");

  /* The log must hold exactly "child 1, parent 1, child 2, ..." */
  size_t cap = (size_t)rounds * 32 + 64, len = 0;
  char *expect = malloc(cap), *got = malloc(cap + 1);
  for (int n = 1; n <= rounds; n++)
    len += (size_t)snprintf(expect + len, cap - len, "child %d\nparent %d\n", n, n);
  int rd = open(argv[3], O_RDONLY);
  if (rd < 0) die(argv[3]);
  ssize_t got_len = read(rd, got, cap + 1);
  close(rd);
  off_t pos = lseek(log, 0, SEEK_CUR);
  int log_ok = got_len == (ssize_t)len && memcmp(got, expect, len) == 0 && pos == (off_t)len;
  int child_ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  int counter_ok = *counter == 2L * rounds;
  printf("family: child exit %s, counter %ld %s, log %zd bytes %s, verdict %s\n",
         child_ok ? "0 ok" : "WRONG", *counter, counter_ok ? "ok" : "WRONG", got_len,
         log_ok ? "ok" : "WRONG", !bad && child_ok && counter_ok && log_ok ? "PASS" : "FAIL");
  return !bad && child_ok && counter_ok && log_ok ? 0 : 1;
}
