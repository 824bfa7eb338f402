/* A parent whose child is stopped by job control. The child stops itself
 * with SIGSTOP; the parent sees the stop (waitid WSTOPPED with WNOWAIT,
 * which leaves it to be reported again), counts TICKS lines, one every
 * INTERVAL_MS, and halfway asks again, without waiting, whether the child
 * is stopped: a restore must bring the child back stopped, not running.
 * Then it sends SIGCONT; the child prints one line and exits 7, and the
 * parent reaps it. The child also has two more SIGSTOPs pending while it
 * is stopped. Usage: stopped_child TICKS INTERVAL_MS */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: stopped_child TICKS INTERVAL_MS\n");
    return 2;
  }
  int ticks = atoi(argv[1]);
  long interval_ms = atol(argv[2]);
  struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
  setvbuf(stdout, NULL, _IOLBF, 0);
  pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) {
    raise(SIGSTOP);
    printf("child: continued\n");
    _exit(7);
  }
  siginfo_t si = {0};
  if (waitid(P_PID, child, &si, WSTOPPED | WNOWAIT) != 0) return 1;
  printf("child stopped by signal %d\n", si.si_status);
  /* Another SIGSTOP, to the process and to the thread: pending while it is
   * stopped (the SIGCONT below discards them). A dump must not be thrown
   * by stop signals that arrive while it works on the child. */
  kill(child, SIGSTOP);
  syscall(SYS_tkill, child, SIGSTOP);
  for (int i = 1; i <= ticks; i++) {
    printf("tick %d\n", i);
    nanosleep(&ts, NULL);
    if (i == ticks / 2) {
      siginfo_t now = {0};
      int rc = waitid(P_PID, child, &now, WSTOPPED | WEXITED | WNOHANG | WNOWAIT);
      printf("child still stopped: %s\n",
             rc == 0 && now.si_pid == child && now.si_code == CLD_STOPPED ? "yes" : "NO");
    }
  }
  kill(child, SIGCONT);
  int st = 0;
  if (waitpid(child, &st, 0) != child) return 1;
  printf("child exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  return 0;
}
