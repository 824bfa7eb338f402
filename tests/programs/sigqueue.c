/* Holds queued signals across a checkpoint: SIGUSR1 and SIGRTMIN are
 * blocked; someone queues them (with values) while it counts; at round
 * ROUNDS/2+... it takes them with sigtimedwait and prints what arrived.
 * A restore that lost its queued signals prints "missing".
 * Usage: sigqueue ROUNDS INTERVAL_MS  (prints "blocked" first) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 10;
  long interval_ms = argc > 2 ? atol(argv[2]) : 200;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGRTMIN);
  sigprocmask(SIG_BLOCK, &set, NULL);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("blocked\n");
  struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
  for (int i = 1; i <= rounds; i++) {
    printf("%d\n", i);
    nanosleep(&ts, NULL);
  }
  for (int k = 0; k < 2; k++) {
    siginfo_t si;
    struct timespec zero = {0, 0};
    int sig = sigtimedwait(&set, &si, &zero);
    if (sig < 0) { printf("missing\n"); continue; }
    printf("%s code=%s value=%d\n", sig == SIGUSR1 ? "SIGUSR1" : "SIGRTMIN",
           si.si_code == SI_QUEUE ? "SI_QUEUE" : "other", si.si_value.sival_int);
  }
  return 0;
}
