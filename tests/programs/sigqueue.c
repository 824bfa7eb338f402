/* Holds queued signals across a checkpoint: SIGTRAP (with a handler of its
 * own), SIGUSR1 and SIGRTMIN are blocked in both its threads; someone sends
 * SIGTRAP (kill) to the process and queues one to its worker thread
 * (rt_tgsigqueueinfo, with a value), and
 * queues the others (with values) while it counts; after ROUNDS rounds
 * each thread takes its signals with sigtimedwait and the main thread
 * prints what arrived, then whether its SIGTRAP handler is still its own.
 * A restore that lost its queued signals prints "missing".
 * Usage: sigqueue ROUNDS INTERVAL_MS  (prints "blocked" first) */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void on_trap(int sig) { (void)sig; }

static atomic_int go;
static int worker_code = 1, worker_value;  /* 1: none taken */

/* Waits for the main thread's word, then takes its own SIGTRAP. */
static void *worker(void *arg) {
  (void)arg;
  while (!atomic_load(&go)) {
    struct timespec ms = {0, 10 * 1000000};
    nanosleep(&ms, NULL);
  }
  sigset_t trap;
  sigemptyset(&trap);
  sigaddset(&trap, SIGTRAP);
  siginfo_t si;
  struct timespec zero = {0, 0};
  if (sigtimedwait(&trap, &si, &zero) == SIGTRAP) {
    worker_code = si.si_code;
    worker_value = si.si_value.sival_int;
  }
  return NULL;
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 10;
  long interval_ms = argc > 2 ? atol(argv[2]) : 200;
  sigset_t set;
  struct sigaction sa = {0};
  sa.sa_handler = on_trap;
  sigaction(SIGTRAP, &sa, NULL);
  sigemptyset(&set);
  sigaddset(&set, SIGTRAP);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGRTMIN);
  sigprocmask(SIG_BLOCK, &set, NULL);
  pthread_t w;
  pthread_create(&w, NULL, worker, NULL);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("blocked\n");
  struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
  for (int i = 1; i <= rounds; i++) {
    printf("%d\n", i);
    nanosleep(&ts, NULL);
  }
  for (int k = 0; k < 3; k++) {
    siginfo_t si;
    struct timespec zero = {0, 0};
    int sig = sigtimedwait(&set, &si, &zero);
    if (sig < 0) { printf("missing\n"); continue; }
    if (sig == SIGTRAP) {
      printf("SIGTRAP code=%s\n", si.si_code == SI_USER ? "SI_USER" : "other");
      continue;
    }
    printf("%s code=%s value=%d\n", sig == SIGUSR1 ? "SIGUSR1" : "SIGRTMIN",
           si.si_code == SI_QUEUE ? "SI_QUEUE" : "other", si.si_value.sival_int);
  }
  atomic_store(&go, 1);
  pthread_join(w, NULL);
  if (worker_code == 1) printf("worker missing\n");
  else
    printf("worker SIGTRAP code=%s value=%d\n", worker_code == SI_QUEUE ? "SI_QUEUE" : "other",
           worker_value);
  struct sigaction now;
  sigaction(SIGTRAP, NULL, &now);
  printf("SIGTRAP handler %s\n", now.sa_handler == on_trap ? "kept" : "lost");
  return 0;
}
