/* A counter that starts programs with vfork(), as system(), posix_spawn
 * and Python's subprocess do: while the child has not run its program
 * the parent sleeps uninterruptibly and no ptrace stop reaches it.
 *   vfork_spawn spawn LIMIT INTERVAL_MS   each line, vfork a child that
 *       waits 300 ms before it runs /bin/true (a slow exec); then the line
 *   vfork_spawn stuck LIMIT INTERVAL_MS   first a child of its own vforks a
 *       grandchild that never runs a program; then a line per interval
 *   vfork_spawn thread-stuck LIMIT INTERVAL_MS   the same, from a second
 *       thread of that child (its leader goes on running) */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void pause_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {}
}

static void *vfork_stuck(void *arg) {
  (void)arg;
  if (vfork() == 0) {
    /* Only system calls in a vfork child: it runs on its parent's stack. */
    for (;;) syscall(SYS_pause);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4 || (strcmp(argv[1], "spawn") != 0 && strcmp(argv[1], "stuck") != 0 &&
                    strcmp(argv[1], "thread-stuck") != 0)) {
    fprintf(stderr, "usage: vfork_spawn spawn|stuck|thread-stuck LIMIT INTERVAL_MS\n");
    return 2;
  }
  int spawn = strcmp(argv[1], "spawn") == 0, limit = atoi(argv[2]), interval = atoi(argv[3]);
  if (!spawn && fork() == 0) {
    if (strcmp(argv[1], "stuck") == 0) {
      vfork_stuck(NULL);
      _exit(0);
    }
    pthread_t t;
    pthread_create(&t, NULL, vfork_stuck, NULL);
    for (;;) pause_ms(1000); /* the leader runs on */
  }
  for (int n = 1; n <= limit; n++) {
    if (spawn) {
      pid_t c = vfork();
      if (c == 0) {
        struct timespec ts = {0, 300 * 1000000L};
        syscall(SYS_nanosleep, &ts, NULL);
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
      }
      int status = 0;
      if (c < 0 || waitpid(c, &status, 0) != c || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("%d spawn failed\n", n);
        return 1;
      }
    }
    printf("%d\n", n);
    fflush(stdout);
    pause_ms(interval);
  }
  return 0;
}
