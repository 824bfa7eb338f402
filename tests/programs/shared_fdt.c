/* Tables shared, or not, where snap cannot restore them so, which snap
 * refuses at dump. Usage:
 *   shared_fdt            a parent and a child made with clone(CLONE_FILES)
 *                         (not a thread): one fd table for two processes.
 *                         Prints "sharing PARENT CHILD" and waits.
 *   shared_fdt files|fs   a thread that unshare()s its fd table (files) or
 *                         its cwd, root and umask (fs) from its process.
 *                         Prints "unshared PID TID" and waits. */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static char stack[65536] __attribute__((aligned(16)));

static int child(void *arg) {
  (void)arg;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  for (;;) pause();
  return 0;
}

static void *unsharing(void *arg) {
  if (unshare(*(int *)arg)) {
    perror("unshare");
    _exit(1);
  }
  printf("unshared %d %d\n", (int)getpid(), (int)syscall(SYS_gettid));
  for (;;) pause();
  return NULL;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc > 1) {
    static int flags;
    flags = strcmp(argv[1], "fs") == 0 ? CLONE_FS : CLONE_FILES;
    pthread_t t;
    if (pthread_create(&t, NULL, unsharing, &flags)) return perror("pthread_create"), 1;
    for (;;) pause();
  }
  int pid = clone(child, stack + sizeof stack, CLONE_FILES | SIGCHLD, NULL);
  if (pid < 0) return perror("clone"), 1;
  printf("sharing %d %d\n", (int)getpid(), pid);
  for (;;) pause();
}
