/* A target for the parasite tests: a process with state that only the
 * process itself can see, which checks that state as it runs.
 *
 *   - a SIGALRM handler (SA_ONSTACK) on an alternate signal stack, driven by
 *     a running ITIMER_REAL; the handler checks it runs on that stack;
 *   - a POSIX timer (CLOCK_MONOTONIC, SIGUSR1, its own handler);
 *   - a SIGTRAP handler (as runtimes with their own breakpoints have), which
 *     every check raises and expects to run;
 *   - a pipe holding unread data;
 *   - a loop printing "I VALUE" for I = 1..N, VALUE a 64-bit LCG step
 *     (x = x * 6364136223846793005 + 1442695040888963407, x0 = 42), printed
 *     as hex, plus a double accumulator; one line per INTERVAL_MS.
 *   - 3 worker threads, each with an alternate signal stack of its own
 *     (16 KiB) and SIGALRM and SIGUSR1 blocked, each checking both every
 *     5 ms (so that a dump runs the parasite in every thread at once, and a
 *     restore must give each thread its own state back).
 * Every 10 lines it checks handlers, altstack, timers, signal mask, the
 * workers and the pipe, and prints "FAIL <what>" if anything is off. At the
 * end it reads the pipe, forks a child that exits at once (glibc's fork
 * reclaims the other threads' stacks in the child: a stack a dump left
 * marked MADV_DONTFORK would crash it) and prints "DONE ok" or "FAIL ...".
 *
 * Usage: victim N [INTERVAL_MS]   (prints "ready PID" to stderr at start) */
#include <errno.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char kPipeData[] = "snap-victim: unread pipe data 0123456789";
static char altstack[65536] __attribute__((aligned(16)));
static volatile sig_atomic_t alarms, timer_ticks, off_stack, traps;

static void on_trap(int sig) {
  (void)sig;
  traps++;
}

static void on_alarm(int sig) {
  (void)sig;
  char here;
  if (&here < altstack || &here >= altstack + sizeof altstack) off_stack++;
  alarms++;
}

static void on_timer(int sig, siginfo_t* si, void* uc) {
  (void)sig;
  (void)uc;
  if (si->si_code == SI_TIMER && si->si_value.sival_int == 0x5eed) timer_ticks++;
}

static int fails;
static void fail(const char* what) {
  printf("FAIL %s\n", what);
  fails++;
}

#define WORKERS 3
static char worker_alt[WORKERS][16384] __attribute__((aligned(16)));
static const char* volatile worker_bad[WORKERS];
static volatile int worker_rounds[WORKERS];

static void* worker(void* arg) {
  long k = (long)arg;
  char name[16];
  snprintf(name, sizeof name, "victim-w%ld", k);
  prctl(PR_SET_NAME, name);  /* the dump records each thread's name */
  stack_t ss = {.ss_sp = worker_alt[k], .ss_size = sizeof worker_alt[k], .ss_flags = 0};
  if (sigaltstack(&ss, NULL)) worker_bad[k] = "sigaltstack set";
  for (;;) {
    stack_t cur;
    if (sigaltstack(NULL, &cur) || cur.ss_sp != worker_alt[k] || cur.ss_size != sizeof worker_alt[k])
      worker_bad[k] = "its sigaltstack";
    sigset_t mask;
    pthread_sigmask(SIG_BLOCK, NULL, &mask);
    if (!sigismember(&mask, SIGALRM) || !sigismember(&mask, SIGUSR1) || sigismember(&mask, SIGTRAP))
      worker_bad[k] = "its signal mask";
    worker_rounds[k]++;
    struct timespec t = {0, 5000000};
    nanosleep(&t, NULL);
  }
  return NULL;
}

static timer_t timer;
static int pipefd[2];

static void check_state(int last_alarms, int last_ticks) {
  struct sigaction sa;
  sigaction(SIGALRM, NULL, &sa);
  if (sa.sa_handler != on_alarm || !(sa.sa_flags & SA_ONSTACK)) fail("SIGALRM handler");
  sigaction(SIGUSR1, NULL, &sa);
  if (sa.sa_sigaction != on_timer || !(sa.sa_flags & SA_SIGINFO)) fail("SIGUSR1 handler");
  sigaction(SIGTRAP, NULL, &sa);
  if (sa.sa_handler != on_trap) fail("SIGTRAP handler");
  int before = traps;
  if (sa.sa_handler == on_trap) raise(SIGTRAP);
  if (traps != before + 1) fail("SIGTRAP did not reach its handler");
  stack_t ss;
  if (sigaltstack(NULL, &ss) || ss.ss_sp != altstack || ss.ss_size != sizeof altstack)
    fail("sigaltstack");
  struct itimerval it;
  getitimer(ITIMER_REAL, &it);
  if (it.it_interval.tv_sec != 0 || it.it_interval.tv_usec != 10000) fail("itimer interval");
  struct itimerspec ts;
  if (timer_gettime(timer, &ts) || ts.it_interval.tv_nsec != 20000000) fail("POSIX timer");
  sigset_t mask;
  sigprocmask(SIG_BLOCK, NULL, &mask);
  if (sigismember(&mask, SIGALRM) || sigismember(&mask, SIGUSR1)) fail("signal mask");
  int avail = -1;
  if (ioctl(pipefd[0], FIONREAD, &avail) || avail != (int)sizeof kPipeData) fail("pipe level");
  if (alarms == last_alarms) fail("no SIGALRM since the last check");
  if (timer_ticks == last_ticks) fail("no POSIX timer tick since the last check");
  if (off_stack) fail("SIGALRM handler ran off the alternate stack");
  for (int k = 0; k < WORKERS; k++) {
    char what[64];
    snprintf(what, sizeof what, "worker %d: %s", k, worker_bad[k] ? worker_bad[k] : "");
    if (worker_bad[k]) fail(what);
    if (!worker_rounds[k]) fail("a worker thread does not run");
  }
}

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&t, &t) && errno == EINTR) {
  }
}

int main(int argc, char** argv) {
  long n = argc > 1 ? atol(argv[1]) : 100;
  long interval_ms = argc > 2 ? atol(argv[2]) : 50;
  setvbuf(stdout, NULL, _IOLBF, 0);

  stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
  if (sigaltstack(&ss, NULL)) return perror("sigaltstack"), 1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sa.sa_flags = SA_ONSTACK | SA_RESTART;
  sigaction(SIGALRM, &sa, NULL);
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_timer;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigaction(SIGUSR1, &sa, NULL);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_trap;
  sigaction(SIGTRAP, &sa, NULL);

  struct itimerval it = {{0, 10000}, {0, 10000}};
  setitimer(ITIMER_REAL, &it, NULL);
  struct sigevent sev;
  memset(&sev, 0, sizeof sev);
  sev.sigev_notify = SIGEV_SIGNAL;
  sev.sigev_signo = SIGUSR1;
  sev.sigev_value.sival_int = 0x5eed;
  if (timer_create(CLOCK_MONOTONIC, &sev, &timer)) return perror("timer_create"), 1;
  struct itimerspec ts = {{0, 20000000}, {0, 20000000}};
  timer_settime(timer, 0, &ts, NULL);

  sigset_t block, old_mask;  // the workers start with SIGALRM and SIGUSR1 blocked
  sigemptyset(&block);
  sigaddset(&block, SIGALRM);
  sigaddset(&block, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &block, &old_mask);
  for (long k = 0; k < WORKERS; k++) {
    pthread_t t;
    if (pthread_create(&t, NULL, worker, (void*)k)) return perror("pthread_create"), 1;
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, NULL);

  if (pipe(pipefd)) return perror("pipe"), 1;
  if (write(pipefd[1], kPipeData, sizeof kPipeData) != (ssize_t)sizeof kPipeData) return 1;

  fprintf(stderr, "ready %d\n", (int)getpid());
  uint64_t x = 42;
  double acc = 0.0;
  int last_alarms = -1, last_ticks = -1;
  for (long i = 1; i <= n; i++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    acc += 0.25;
    printf("%ld %016llx %.2f\n", i, (unsigned long long)x, acc);
    if (i % 10 == 0) {
      check_state(last_alarms, last_ticks);
      last_alarms = alarms;
      last_ticks = timer_ticks;
    }
    sleep_ms(interval_ms);
  }
  char buf[sizeof kPipeData];
  ssize_t got = read(pipefd[0], buf, sizeof buf);
  if (got != (ssize_t)sizeof kPipeData || memcmp(buf, kPipeData, sizeof buf)) fail("pipe content");
  pid_t child = fork();
  if (child == 0) _exit(0);
  int status = 0;
  if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0)
    fail("a child forked at the end did not exit cleanly");
  if (!fails) printf("DONE ok\n");
  return fails ? 1 : 0;
}
