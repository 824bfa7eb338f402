/* Holds something snap refuses to dump, prints "ready PID", then waits.
 * Usage: unrestorable --aio          an AIO context (io_setup)
 *        unrestorable --clone-files  a child sharing its fd table (CLONE_FILES);
 *                                    PID is the child's */
#include <linux/aio_abi.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static char stack[64 * 1024];

static int child(void *arg) {
  (void)arg;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  for (;;) pause();
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc > 1 && !strcmp(argv[1], "--aio")) {
    aio_context_t ctx = 0;
    if (syscall(SYS_io_setup, 4, &ctx) < 0) return perror("io_setup"), 1;
    printf("ready %d\n", getpid());
  } else if (argc > 1 && !strcmp(argv[1], "--clone-files")) {
    pid_t pid = clone(child, stack + sizeof stack, CLONE_FILES | SIGCHLD, NULL);
    if (pid < 0) return perror("clone"), 1;
    printf("ready %d\n", pid);
  } else {
    return 2;
  }
  for (;;) pause();
}
