/* A job that ignores SIGTRAP (as programs do that must survive stray
 * breakpoints) and raises it every round: with the default action back, it
 * would die of it. Prints "I ignored" per round. Usage: trap_ignored N MS */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 10, ms = argc > 2 ? atol(argv[2]) : 100;
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGTRAP, SIG_IGN);
  for (long i = 1; i <= n; i++) {
    raise(SIGTRAP);
    struct sigaction sa;
    sigaction(SIGTRAP, NULL, &sa);
    printf("%ld %s\n", i, sa.sa_handler == SIG_IGN ? "ignored" : "not ignored");
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
  }
  return 0;
}
