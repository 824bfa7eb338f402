/* A thread that waits inside a signal handler running on a small
 * alternate stack (sigaltstack), with the program's data right below that
 * stack's base: as a job whose handler (a SIGTERM or SIGUSR1 one, say)
 * waits on an alternate stack would be at a checkpoint. The kernel never
 * writes below the base of an alternate stack (a signal whose frame would
 * not fit is fatal instead), so nothing may. Every step the counting
 * thread checks the data below it; near the end it lets the handler return
 * (through the frame the kernel wrote on the alternate stack).
 *
 * Usage: altstack_handler thread|main STEPS MS
 *   thread: a second thread waits in the handler, the main thread counts;
 *   main:   the main thread waits in the handler, a second thread counts.
 * Prints "N data ok" each step (or where the data changed), then "DONE". */

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { kBelow = 64 << 10 };
static unsigned char* region;  /* kBelow bytes of data, then the alternate stack */
static int wake[2];
static volatile int state;     /* 1 in the handler, 2 returned from it */
static int steps, ms;

static unsigned char pattern(size_t i) { return (unsigned char)(i * 7 + 3); }

static void on_signal(int sig) {
  (void)sig;
  state = 1;
  char c;
  while (read(wake[0], &c, 1) < 0) {
  }
  state = 2;
}

static unsigned char probe_stack[256 << 10] __attribute__((aligned(64)));
static size_t probe_used;  /* the kernel's frame and the probe handler's own */

static void on_probe(int sig) {
  (void)sig;
  volatile char here;
  probe_used = (size_t)((uintptr_t)probe_stack + sizeof probe_stack - (uintptr_t)&here);
}

/* Waits in on_signal on an alternate stack with little more room than the
 * kernel's frame and the handler need (measured by a first signal on a
 * large one), then returns once the handler has. */
static void wait_in_handler(void) {
  stack_t ss = {.ss_sp = probe_stack, .ss_size = sizeof probe_stack, .ss_flags = 0};
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_probe;
  sa.sa_flags = SA_ONSTACK;
  if (sigaltstack(&ss, NULL) != 0 || sigaction(SIGUSR2, &sa, NULL) != 0) exit(1);
  raise(SIGUSR2);
  size_t size = (probe_used + 768 + 63) & ~(size_t)63;
  if (size < 2048) size = 2048; /* the least the kernel takes */
  ss.ss_sp = region + kBelow;
  ss.ss_size = size;
  if (sigaltstack(&ss, NULL) != 0) {
    perror("sigaltstack");
    exit(1);
  }
  pthread_kill(pthread_self(), SIGUSR1);
}

static void* waiter(void* arg) {
  (void)arg;
  wait_in_handler();
  return NULL;
}

static void count(void) {
  while (state != 1) usleep(1000);
  for (int i = 0; i < steps; i++) {
    if (i == steps - 3 && write(wake[1], "x", 1) != 1) exit(1);
    long at = -1;
    for (size_t k = 0; k < kBelow && at < 0; k++)
      if (region[k] != pattern(k)) at = (long)k;
    if (at < 0)
      printf("%d data ok\n", i);
    else
      printf("%d data below the alternate stack changed at byte %ld of %d\n", i, at, kBelow);
    fflush(stdout);
    usleep((useconds_t)ms * 1000);
  }
}

static void* counter(void* arg) {
  (void)arg;
  count();
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 4 || (strcmp(argv[1], "thread") && strcmp(argv[1], "main"))) {
    fprintf(stderr, "usage: altstack_handler thread|main STEPS MS\n");
    return 2;
  }
  steps = atoi(argv[2]);
  ms = atoi(argv[3]);
  if (steps < 3) return 2;
  region = mmap(NULL, kBelow + (64 << 10), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                -1, 0);
  if (region == MAP_FAILED) return 1;
  for (size_t i = 0; i < kBelow; i++) region[i] = pattern(i);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_ONSTACK;
  if (sigaction(SIGUSR1, &sa, NULL) != 0 || pipe(wake) != 0) return 1;
  /* Bound now: read() resolved lazily from the handler would have the
   * dynamic linker save the vector registers on the small stack. */
  char none;
  if (read(wake[0], &none, 0) != 0) return 1;
  pthread_t t;
  if (strcmp(argv[1], "thread") == 0) {
    pthread_create(&t, NULL, waiter, NULL);
    count();
  } else {
    pthread_create(&t, NULL, counter, NULL);
    wait_in_handler();
  }
  pthread_join(t, NULL);
  printf("%s\n", state == 2 ? "DONE" : "the handler did not return");
  return 0;
}
