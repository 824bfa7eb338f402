/* The layout a job-control shell leaves behind: a session with two process
 * groups, one of which has lost its leader.
 *
 *   root      setsid() (leads the session and its own group), becomes a
 *             child subreaper;
 *   leader A  setpgid(0, 0) (group A), forks workers 1 and 2 into group A
 *             and exits; the root reaps it, so group A has no leader and its
 *             workers are reparented to the root;
 *   worker 3  forked by the root, in the root's group.
 *
 * Each worker writes TICKS lines, one every INTERVAL_MS, to its own pipe to
 * the root, each saying whether its group and session are still those it
 * started in, then a verdict (also: is the root its parent now, and is group
 * A's leader still gone). The root prints the lines in a fixed order (worker
 * 1, 2, 3 per tick), reaps every child and prints a last line, so the whole
 * output is deterministic. Usage: jobs TICKS INTERVAL_MS */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int ticks;
static struct timespec interval;
static int pipes[3][2];
static pid_t root_pid;

static const char *yes(int ok) { return ok ? "yes" : "NO"; }

static void worker(int k, pid_t group, int group_a) {
  int out = pipes[k - 1][1];
  for (int i = 0; i < 3; i++) {
    close(pipes[i][0]);
    if (i != k - 1) close(pipes[i][1]);
  }
  pid_t pgid0 = getpgid(0), sid0 = getsid(0);
  int start_ok = pgid0 == group && sid0 == root_pid;
  for (int i = 1; i <= ticks; i++) {
    nanosleep(&interval, NULL);
    dprintf(out, "worker %d tick %d: same group and session %s\n", k, i,
            yes(getpgid(0) == pgid0 && getsid(0) == sid0));
  }
  int parent_ok = getppid() == root_pid;
  if (group_a) {
    int leader_gone = kill(group, 0) < 0 && errno == ESRCH;
    dprintf(out,
            "worker %d (group A): started in group A of the session %s, same group %s, "
            "same session %s, parent is the root %s, group A's leader still gone %s\n",
            k, yes(start_ok), yes(getpgid(0) == pgid0), yes(getsid(0) == sid0),
            yes(parent_ok), yes(leader_gone));
  } else {
    dprintf(out,
            "worker %d (root's group): started in the root's group %s, same group %s, "
            "same session %s, parent is the root %s\n",
            k, yes(start_ok), yes(getpgid(0) == pgid0), yes(getsid(0) == sid0),
            yes(parent_ok));
  }
  _exit(0);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: jobs TICKS INTERVAL_MS\n");
    return 2;
  }
  ticks = atoi(argv[1]);
  long interval_ms = atol(argv[2]);
  interval.tv_sec = interval_ms / 1000;
  interval.tv_nsec = (interval_ms % 1000) * 1000000L;
  setvbuf(stdout, NULL, _IOLBF, 0);

  if (setsid() < 0) {
    perror("jobs: setsid");
    return 3;
  }
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
    perror("jobs: PR_SET_CHILD_SUBREAPER");
    return 3;
  }
  root_pid = getpid();
  for (int i = 0; i < 3; i++)
    if (pipe(pipes[i]) < 0) {
      perror("jobs: pipe");
      return 3;
    }
  printf("root: leads its session and group %s\n",
         yes(getsid(0) == root_pid && getpgrp() == root_pid));

  pid_t leader = fork();
  if (leader < 0) {
    perror("jobs: fork");
    return 3;
  }
  if (leader == 0) {
    setpgid(0, 0);
    pid_t self = getpid();
    for (int k = 1; k <= 2; k++) {
      pid_t w = fork();
      if (w < 0) _exit(3);
      if (w == 0) worker(k, self, 1);
    }
    _exit(0);
  }
  setpgid(leader, leader);  /* as a shell does; fails harmlessly if it already exited */
  int st = 0;
  if (waitpid(leader, &st, 0) != leader) {
    perror("jobs: waitpid");
    return 3;
  }
  printf("root: group A's leader exited %d, its workers stay in group A\n",
         WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  pid_t w3 = fork();
  if (w3 < 0) {
    perror("jobs: fork");
    return 3;
  }
  if (w3 == 0) worker(3, root_pid, 0);

  FILE *in[3];
  for (int i = 0; i < 3; i++) {
    close(pipes[i][1]);
    in[i] = fdopen(pipes[i][0], "r");
  }
  char line[512];
  for (int i = 0; i <= ticks; i++)  /* ticks lines, then the verdict */
    for (int k = 0; k < 3; k++) {
      if (!fgets(line, sizeof line, in[k])) {
        printf("root: worker %d's pipe ended early\n", k + 1);
        return 1;
      }
      fputs(line, stdout);
    }
  int reaped = 0, all_zero = 1;
  while (waitpid(-1, &st, 0) > 0) {
    reaped++;
    all_zero &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
  }
  printf("root: reaped %d workers, all exited 0 %s\n", reaped, yes(all_zero));
  return 0;
}
