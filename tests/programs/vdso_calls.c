/* Calls what the kernel's vDSO serves (clock_gettime, gettimeofday, time,
 * clock_getres, getcpu) through glibc, which found those functions in the
 * vDSO once, at start, and checks each answer against the system call's:
 * a restored process whose vDSO calls land in the wrong code crashes or
 * prints BAD. Usage: vdso_calls ROUNDS INTERVAL_MS [SPINNERS [segv-blocked]].
 * SPINNERS more threads read CLOCK_MONOTONIC in a tight loop (most of their
 * time inside the vDSO, where a dump then finds them) and check that each
 * call returned 0 with the time written and that it never goes back; the
 * last line says BAD if not. With "segv-blocked" they block SIGSEGV. */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long ns(const struct timespec *t) { return t->tv_sec * 1000000000LL + t->tv_nsec; }

static const char *check(void) {
  static const clockid_t clocks[] = {CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME,
                                     CLOCK_MONOTONIC_RAW, CLOCK_REALTIME_COARSE};
  for (unsigned i = 0; i < sizeof clocks / sizeof clocks[0]; i++) {
    struct timespec lib, sys, lib2, res_lib, res_sys;
    if (clock_gettime(clocks[i], &lib) != 0) return "clock_gettime failed";
    if (syscall(SYS_clock_gettime, clocks[i], &sys) != 0) return "SYS_clock_gettime failed";
    if (clock_gettime(clocks[i], &lib2) != 0) return "clock_gettime failed";
    /* The coarse clock may lag by a tick; all must agree within 50 ms. */
    if (ns(&sys) - ns(&lib) < -50000000LL || ns(&lib2) - ns(&sys) < -50000000LL ||
        ns(&lib2) - ns(&lib) > 1000000000LL)
      return "clock_gettime disagrees with the system call";
    if (clock_getres(clocks[i], &res_lib) != 0 ||
        syscall(SYS_clock_getres, clocks[i], &res_sys) != 0 || ns(&res_lib) != ns(&res_sys))
      return "clock_getres disagrees with the system call";
  }
  struct timeval tv;
  struct timespec sys;
  if (gettimeofday(&tv, NULL) != 0) return "gettimeofday failed";
  syscall(SYS_clock_gettime, CLOCK_REALTIME, &sys);
  long long tv_ns = tv.tv_sec * 1000000000LL + tv.tv_usec * 1000LL;
  if (tv_ns - ns(&sys) > 50000000LL || ns(&sys) - tv_ns > 50000000LL)
    return "gettimeofday disagrees with the system call";
  time_t t = time(NULL);
  if (t < sys.tv_sec - 1 || t > sys.tv_sec + 1) return "time() disagrees with the system call";
  unsigned cpu = 0, node = 0, scpu = 0;
  if (getcpu(&cpu, &node) != 0 || syscall(SYS_getcpu, &scpu, NULL, NULL) != 0)
    return "getcpu failed";
  if (cpu >= (unsigned)sysconf(_SC_NPROCESSORS_CONF)) return "getcpu gave no CPU of this machine";
  return NULL;
}

static volatile int went_back;

static void *spin(void *arg) {
  if (arg) {
    sigset_t segv;
    sigemptyset(&segv);
    sigaddset(&segv, SIGSEGV);
    pthread_sigmask(SIG_BLOCK, &segv, NULL);
  }
  long long last = 0;
  for (;;) {
    struct timespec t = {-1, -1};
    if (clock_gettime(CLOCK_MONOTONIC, &t) != 0 || t.tv_sec < 0 || t.tv_nsec < 0 ||
        t.tv_nsec >= 1000000000L || ns(&t) < last)
      went_back = 1;
    last = ns(&t);
  }
  return NULL;
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 10;
  long interval_ms = argc > 2 ? atol(argv[2]) : 200;
  int spinners = argc > 3 ? atoi(argv[3]) : 0;
  int segv_blocked = argc > 4 && strcmp(argv[4], "segv-blocked") == 0;
  for (int i = 0; i < spinners; i++) {
    pthread_t t;
    if (pthread_create(&t, NULL, spin, segv_blocked ? &segv_blocked : NULL) != 0) return 2;
  }
  int bad = 0;
  for (int r = 1; r <= rounds; r++) {
    const char *why = check();
    if (why) bad++;
    printf("round %d %s\n", r, why ? why : "ok");
    fflush(stdout);
    struct timespec d = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
    nanosleep(&d, NULL);
  }
  if (went_back) bad++;
  printf("%s\n", bad ? "BAD" : "all ok");
  return bad ? 1 : 0;
}
