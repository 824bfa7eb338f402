/* A small process tree for the dump of whole trees (issue 9): the parent is
 * a child subreaper, keeps an exited child unreaped (a zombie, exit code 7),
 * and shares with a live child: a stream socketpair, a seqpacket and a
 * datagram socketpair with messages queued in both directions, an open file
 * inherited across fork (one open file description), and a MAP_SHARED
 * anonymous region the child fills.
 *
 * Prints "ready" once everything is queued, then waits until the file GO
 * exists (the test creates it after the dump), reads every queue, checks
 * the exact bytes and message boundaries, and prints "parent ok" /
 * "child ok" (or FAIL lines), then "DONE ok" after reaping both children.
 * Usage: tree_dump FILE GO */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SHARED_PAGES 16

static int failures;

static void fail(const char *who, const char *what) {
  printf("%s FAIL %s\n", who, what);
  failures++;
}

static void send_all(int fd, const char *s) {
  if (send(fd, s, strlen(s), 0) != (ssize_t)strlen(s)) { perror("send"); exit(3); }
}

/* Reads exactly the messages `want` (NULL-terminated) from a message socket. */
static void expect_messages(const char *who, int fd, const char *const *want) {
  char buf[256];
  for (; *want; want++) {
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n != (ssize_t)strlen(*want) || memcmp(buf, *want, (size_t)n) != 0) {
      fail(who, *want);
      return;
    }
  }
  /* 0: the peer may have closed its end meanwhile (end of stream). */
  if (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) fail(who, "an extra message");
}

static void expect_stream(const char *who, int fd, const char *want) {
  char buf[256];
  size_t got = 0;
  for (;;) {
    ssize_t n = recv(fd, buf + got, sizeof buf - got, MSG_DONTWAIT);
    if (n <= 0) break;
    got += (size_t)n;
  }
  if (got != strlen(want) || memcmp(buf, want, got) != 0) fail(who, want);
}

static void wait_go(const char *go) {
  struct timespec ts = {0, 10 * 1000000L};
  struct stat st;
  while (stat(go, &st) != 0) nanosleep(&ts, NULL);
}

static const char *const kToChildSeq[] = {"seq one", "seq two, longer", NULL};
static const char *const kToParentSeq[] = {"reply 1", "reply 22", "reply 333", NULL};
static const char *const kToChildDgram[] = {"d1", "dgram two", NULL};
static const char *const kToParentDgram[] = {"back 1", "back 2", NULL};

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: tree_dump FILE GO\n"); return 2; }
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) { perror("prctl"); return 1; }

  pid_t zombie = fork();
  if (zombie == 0) _exit(7);

  int st[2], sq[2], dg[2], sync_pipe[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sq) ||
      socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) || pipe(sync_pipe)) {
    perror("socketpair");
    return 1;
  }
  int file = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (file < 0) { perror(argv[1]); return 1; }
  if (write(file, "0123456789", 10) != 10) return 1;
  uint64_t *shared = mmap(NULL, SHARED_PAGES * 4096, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) return 1;

  pid_t child = fork();
  if (child == 0) {
    close(st[0]); close(sq[0]); close(dg[0]); close(sync_pipe[0]);
    send_all(st[1], "stream from child");
    for (const char *const *m = kToParentSeq; *m; m++) send_all(sq[1], *m);
    for (const char *const *m = kToParentDgram; *m; m++) send_all(dg[1], *m);
    for (size_t p = 0; p < SHARED_PAGES; p++)
      for (size_t i = 0; i < 512; i++) shared[p * 512 + i] = p + 1000;
    /* Move the shared file offset: 10 -> 13. */
    if (write(file, "abc", 3) != 3) return 1;
    if (write(sync_pipe[1], "x", 1) != 1) return 1;
    close(sync_pipe[1]);
    wait_go(argv[2]);
    expect_stream("child", st[1], "stream from parent");
    expect_messages("child", sq[1], kToChildSeq);
    expect_messages("child", dg[1], kToChildDgram);
    if (lseek(file, 0, SEEK_CUR) != 13) fail("child", "shared file offset");
    printf("child %s\n", failures ? "FAIL" : "ok");
    return failures ? 1 : 0;
  }
  close(st[1]); close(sq[1]); close(dg[1]); close(sync_pipe[1]);
  send_all(st[0], "stream from parent");
  for (const char *const *m = kToChildSeq; *m; m++) send_all(sq[0], *m);
  for (const char *const *m = kToChildDgram; *m; m++) send_all(dg[0], *m);
  char c;
  if (read(sync_pipe[0], &c, 1) != 1) return 1;
  close(sync_pipe[0]);
  printf("ready %d %d %d\n", (int)getpid(), (int)child, (int)zombie);
  wait_go(argv[2]);
  expect_stream("parent", st[0], "stream from child");
  expect_messages("parent", sq[0], kToParentSeq);
  expect_messages("parent", dg[0], kToParentDgram);
  if (lseek(file, 0, SEEK_CUR) != 13) fail("parent", "shared file offset");
  for (size_t p = 0; p < SHARED_PAGES; p++)
    if (shared[p * 512 + 7] != p + 1000) { fail("parent", "shared memory"); break; }
  printf("parent %s\n", failures ? "FAIL" : "ok");
  int status = 0;
  if (waitpid(zombie, &status, 0) != zombie || !WIFEXITED(status) || WEXITSTATUS(status) != 7)
    fail("parent", "zombie exit status 7");
  if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail("parent", "child exit status 0");
  printf("DONE %s\n", failures ? "FAIL" : "ok");
  return failures ? 1 : 0;
}
