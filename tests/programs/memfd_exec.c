/* A counter that keeps a program in a memfd and runs it each line with
 * execveat(fd, "", AT_EMPTY_PATH), as runtimes that keep their own binary
 * in a memfd do (the memfd holds a shell script). Each line: "N ran=S",
 * S the program's exit status, or the errno of a failed exec (ETXTBSY=26
 * when something holds the file open for writing).
 * Usage: memfd_exec LIMIT INTERVAL_MS */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: memfd_exec LIMIT INTERVAL_MS\n");
    return 2;
  }
  int limit = atoi(argv[1]), interval = atoi(argv[2]);
  int fd = memfd_create("tool", 0);  /* not close-on-exec: sh reads it as /dev/fd/N */
  static const char script[] = "#!/bin/sh\nexit 7\n";
  if (fd < 0 || write(fd, script, sizeof script - 1) != (ssize_t)(sizeof script - 1)) return 1;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  for (int n = 1; n <= limit; n++) {
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) return 1;
    pid_t c = fork();
    if (c == 0) {
      char *const args[] = {"tool", NULL}, *const env[] = {NULL};
      syscall(SYS_execveat, fd, "", args, env, AT_EMPTY_PATH);
      int err = errno;
      if (write(pipefd[1], &err, sizeof err) < 0) _exit(1);
      _exit(0);
    }
    close(pipefd[1]);
    int err = 0, status = 0;
    ssize_t got = read(pipefd[0], &err, sizeof err);
    close(pipefd[0]);
    waitpid(c, &status, 0);
    if (got == (ssize_t)sizeof err)
      printf("%d ran=errno %d\n", n, err);
    else
      printf("%d ran=%d\n", n, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    fflush(stdout);
    nanosleep(&ts, NULL);
  }
  return 0;
}
