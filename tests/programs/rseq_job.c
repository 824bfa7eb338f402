// A job that runs restartable sequences (rseq(2), as tcmalloc's per-CPU
// caches do) all the time, in its main thread and in a worker, through the
// rseq area glibc registered for each thread. Each critical section reads
// the time stamp counter over and over and ends by storing the longest gap
// it saw between two reads. The kernel aborts a section whose thread was
// preempted or stopped (it goes on at its abort handler, and starts again),
// so a section that finishes has run without a break; one that finishes
// after a gap of over 200 ms ran through a stop it should have been aborted
// by: the job then says so and exits with status 3. (A virtual machine's
// host may pause it for 100 ms, unseen by its kernel: no abort follows; the
// tests hold a dump's stops for 300 ms.) The main thread prints
// "tick N" every INTERVAL_MS, TICKS times, then the job exits 0.
// Exit status 4 (with a message): glibc registered no rseq area here.
// usage: rseq_job TICKS INTERVAL_MS
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/rseq.h>
#include <time.h>
#include <unistd.h>

static uint64_t limit;  // TSC ticks in 200 ms

static struct rseq *rseq_area(void) {
  char *tp;
  __asm__("mov %%fs:0, %0" : "=r"(tp));
  return (struct rseq *)(tp + __rseq_offset);
}

static uint64_t tsc(void) {
  uint32_t lo, hi;
  __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}

// One critical section of `iters` reads: 1 with *gap the longest gap if it
// finished, 0 if the kernel aborted it.
static int critical_section(struct rseq *rs, uint64_t iters, uint64_t *gap) {
  int finished;
  __asm__ __volatile__(
      ".pushsection __rseq_cs, \"aw\"\n\t"
      ".balign 32\n\t"
      "3:\n\t"
      ".long 0, 0\n\t"
      ".quad 1f, 2f - 1f, 4f\n\t"
      ".popsection\n\t"
      "leaq 3b(%%rip), %%rax\n\t"
      "movq %%rax, %[cs]\n\t"
      "1:\n\t"
      "rdtsc\n\t"
      "shlq $32, %%rdx\n\t"
      "orq %%rdx, %%rax\n\t"
      "movq %%rax, %%r8\n\t"
      "xorq %%r10, %%r10\n\t"
      "movq %[iters], %%rcx\n\t"
      "5:\n\t"
      "rdtsc\n\t"
      "shlq $32, %%rdx\n\t"
      "orq %%rdx, %%rax\n\t"
      "movq %%rax, %%r9\n\t"
      "subq %%r8, %%r9\n\t"
      "movq %%rax, %%r8\n\t"
      "cmpq %%r10, %%r9\n\t"
      "cmovaq %%r9, %%r10\n\t"
      "decq %%rcx\n\t"
      "jnz 5b\n\t"
      "movq %%r10, %[gap]\n\t"  // the commit: the section's last instruction
      "2:\n\t"
      "movl $1, %[finished]\n\t"
      "jmp 6f\n\t"
      ".long 0x53053053\n\t"  // RSEQ_SIG, right before the abort handler
      "4:\n\t"
      "movl $0, %[finished]\n\t"
      "6:\n\t"
      : [gap] "=m"(*gap), [finished] "=&r"(finished), [cs] "=m"(rs->rseq_cs)
      : [iters] "r"(iters)
      : "rax", "rcx", "rdx", "r8", "r9", "r10", "memory", "cc");
  return finished;
}

static void run_sections(int rounds) {
  struct rseq *rs = rseq_area();
  for (int i = 0; i < rounds; i++) {
    uint64_t gap = 0;
    if (critical_section(rs, 20000, &gap) && gap > limit) {
      fprintf(stderr, "rseq_job: a critical section finished after a break of %.0f ms: the "
                      "kernel should have aborted it\n", gap * 200.0 / limit);
      fflush(stderr);
      _exit(3);
    }
  }
}

static void *worker(void *arg) {
  (void)arg;
  for (;;) run_sections(1000);
  return NULL;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: rseq_job TICKS INTERVAL_MS\n");
    return 2;
  }
  if (__rseq_size == 0) {
    fprintf(stderr, "rseq_job: glibc registered no rseq area (glibc.pthread.rseq=0?)\n");
    return 4;
  }
  int ticks = atoi(argv[1]), interval = atoi(argv[2]);
  const double t0 = now();
  const uint64_t c0 = tsc();
  struct timespec tenth = {0, 100000000};
  nanosleep(&tenth, NULL);
  limit = (uint64_t)((tsc() - c0) * (0.2 / (now() - t0)));
  pthread_t t;
  if (pthread_create(&t, NULL, worker, NULL) != 0) return 1;
  for (int k = 1; k <= ticks; k++) {
    const double until = now() + interval / 1000.0;
    do run_sections(1);
    while (now() < until);
    printf("tick %d\n", k);
    fflush(stdout);
  }
  return 0;
}
