/* An OpenMP job: each round, a team of threads sums a shared array in
 * parallel (reduction) and the result is printed. The array changes each
 * round, so every line depends on all earlier rounds.
 * Usage: omp_sum ROUNDS INTERVAL_MS  (set OMP_NUM_THREADS for the team) */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define N (1 << 20)

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 10;
  long interval_ms = argc > 2 ? atol(argv[2]) : 100;
  static uint64_t a[N];
  for (int i = 0; i < N; i++) a[i] = (uint64_t)i * 2654435761u;
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("threads %d\n", omp_get_max_threads());
  struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
  for (int r = 1; r <= rounds; r++) {
    uint64_t sum = 0;
#pragma omp parallel for reduction(+ : sum)
    for (int i = 0; i < N; i++) {
      a[i] = a[i] * 6364136223846793005ULL + (uint64_t)r;
      sum += a[i] >> 7;
    }
    printf("round %d sum %016llx\n", r, (unsigned long long)sum);
    nanosleep(&ts, NULL);
  }
  return 0;
}
