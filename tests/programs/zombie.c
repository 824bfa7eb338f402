/* A parent with two unreaped children: the first exits with status 42, the
 * second is killed by SIGUSR1. The parent makes sure both have ended
 * (waitid with WNOWAIT, which leaves them zombies), counts TICKS lines, one
 * every INTERVAL_MS, and only then reaps each with waitpid(pid) and prints
 * what it got. A restore must bring the zombies back with their pids and
 * wait statuses. Two more zombies are in other process groups: one (status
 * 7) in the group of a live child that leads it, one (status 9) in a group
 * whose leader has exited and been reaped; the parent checks their groups
 * before it reaps them. Pids vary from run to run, so the output only says
 * whether they matched. Usage: zombie TICKS INTERVAL_MS */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void describe(const char *which, pid_t want, pid_t got, int st) {
  if (got < 0) {
    printf("reaped the child forked %s: waitpid failed: %s\n", which, strerror(errno));
    return;
  }
  printf("reaped the child forked %s: same pid %s, ", which, got == want ? "yes" : "NO");
  if (WIFEXITED(st))
    printf("exited %d\n", WEXITSTATUS(st));
  else if (WIFSIGNALED(st))
    printf("killed by signal %d (%s)%s\n", WTERMSIG(st), strsignal(WTERMSIG(st)),
           WCOREDUMP(st) ? ", core dumped" : "");
  else
    printf("status 0x%x\n", st);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: zombie TICKS INTERVAL_MS\n");
    return 2;
  }
  int ticks = atoi(argv[1]);
  long interval_ms = atol(argv[2]);
  struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
  setvbuf(stdout, NULL, _IOLBF, 0);

  /* A zombie in a group whose leader has exited and been reaped: forked
   * first, so that a restore makes it right after that group. */
  pid_t gone = fork();
  if (gone == 0) {
    setpgid(0, 0);
    pause();
    _exit(0);
  }
  setpgid(gone, gone);
  pid_t orphaned = fork();
  if (orphaned == 0) {
    setpgid(0, gone);
    _exit(9);
  }
  setpgid(orphaned, gone);
  pid_t first = fork();
  if (first == 0) _exit(42);
  pid_t second = fork();
  if (second == 0) {
    signal(SIGUSR1, SIG_DFL);
    raise(SIGUSR1);
    _exit(1);
  }
  if (first < 0 || second < 0) {
    perror("fork");
    return 3;
  }
  /* A live child leading its own group, and a zombie in that group. */
  pid_t leader = fork();
  if (leader == 0) {
    setpgid(0, 0);
    for (;;) pause();
  }
  setpgid(leader, leader);
  pid_t member = fork();
  if (member == 0) {
    setpgid(0, leader);
    _exit(7);
  }
  if (leader < 0 || member < 0 || gone < 0 || orphaned < 0) {
    perror("fork");
    return 3;
  }
  /* Wait until both have ended, without reaping them. */
  siginfo_t si;
  memset(&si, 0, sizeof si);
  if (waitid(P_PID, (id_t)first, &si, WEXITED | WNOWAIT) < 0 ||
      waitid(P_PID, (id_t)second, &si, WEXITED | WNOWAIT) < 0) {
    perror("waitid");
    return 3;
  }
  if (waitid(P_PID, (id_t)member, &si, WEXITED | WNOWAIT) < 0 ||
      waitid(P_PID, (id_t)orphaned, &si, WEXITED | WNOWAIT) < 0) {
    perror("waitid");
    return 3;
  }
  kill(gone, SIGKILL);
  waitpid(gone, NULL, 0);
  printf("two children ended, not reaped yet\n");
  for (int i = 1; i <= ticks; i++) {
    printf("tick %d\n", i);
    nanosleep(&ts, NULL);
  }
  int st = 0;
  pid_t got = waitpid(first, &st, 0);
  describe("first", first, got, st);
  st = 0;
  got = waitpid(second, &st, 0);
  describe("second", second, got, st);
  printf("zombie in a live child's group: %s\n", getpgid(member) == leader ? "yes" : "NO");
  printf("zombie in a group whose leader is gone: %s\n", getpgid(orphaned) == gone ? "yes" : "NO");
  st = 0;
  got = waitpid(member, &st, 0);
  describe("in a live child's group", member, got, st);
  st = 0;
  got = waitpid(orphaned, &st, 0);
  describe("in a group whose leader is gone", orphaned, got, st);
  kill(leader, SIGKILL);
  waitpid(leader, NULL, 0);
  got = waitpid(-1, &st, WNOHANG);
  printf("no other child: %s\n", got < 0 && errno == ECHILD ? "yes" : "NO");
  return 0;
}
