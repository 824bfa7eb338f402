/* A parent and a child made with clone(CLONE_FILES) (not a thread): one fd
 * table for two processes, which snap refuses at dump. Prints
 * "sharing PARENT CHILD" and waits. Usage: shared_fdt */
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

static char stack[65536] __attribute__((aligned(16)));

static int child(void *arg) {
  (void)arg;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  for (;;) pause();
  return 0;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  int pid = clone(child, stack + sizeof stack, CLONE_FILES | SIGCHLD, NULL);
  if (pid < 0) return perror("clone"), 1;
  printf("sharing %d %d\n", (int)getpid(), pid);
  for (;;) pause();
}
