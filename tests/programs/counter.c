/* The counter from the checkpointing course: prints 1, 2, 3, ... one per
 * interval. A restored counter that was at 3 prints 4 next, not 1.
 * Usage: counter [LIMIT [INTERVAL_MS]] -- stops after LIMIT (default: never). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
  long limit = argc > 1 ? atol(argv[1]) : 0;
  long interval_ms = argc > 2 ? atol(argv[2]) : 1000;
  struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (long i = 1; limit == 0 || i <= limit; i++) {
    printf("%ld\n", i);
    nanosleep(&ts, NULL);
  }
  return 0;
}
