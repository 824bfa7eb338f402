/* Occupies the given pids: for each one forks a child with exactly that pid
 * (clone3 set_tid; needs CAP_CHECKPOINT_RESTORE or root) that sleeps until
 * its parent dies. Prints "took PID" per pid, then "ready", and sleeps.
 * Exits 1 (after saying why) if a pid cannot be taken.
 * Usage: take_pid PID... */
#include <errno.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: take_pid PID...\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  pid_t self = getpid();
  for (int i = 1; i < argc; i++) {
    pid_t want = (pid_t)atol(argv[i]);
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.exit_signal = SIGCHLD;
    args.set_tid = (uint64_t)(uintptr_t)&want;
    args.set_tid_size = 1;
    long rc = syscall(SYS_clone3, &args, sizeof args);
    if (rc == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
      if (getppid() != self) _exit(0);
      for (;;) pause();
    }
    if (rc < 0) {
      fprintf(stderr, "take_pid: cannot take pid %d: %s\n", want, strerror(errno));
      return 1;
    }
    printf("took %ld\n", rc);
  }
  printf("ready\n");
  for (;;) pause();
}
