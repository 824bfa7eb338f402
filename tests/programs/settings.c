/* A counter that first sets what a process carries besides its memory:
 * oom_score_adj, PR_SET_THP_DISABLE, PR_SET_NO_NEW_PRIVS, a membarrier
 * registration (private expedited) and, where it may (it is unset), its
 * audit login uid (/proc/self/loginuid: its own uid, as a login sets it, or
 * 4242 for root), an fd on its own network namespace (/proc/self/ns/net,
 * still that namespace: netns_fd=1) and a SIGTRAP handler (each round it
 * raises SIGTRAP: sigtrap=1 when the handler ran). Each line shows them as
 * the process reads them back then, so a restored run prints the
 * same lines only if they came back.
 * Usage: settings LIMIT INTERVAL_MS */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/membarrier.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long loginuid(void) {
  char buf[16] = {0};
  int fd = open("/proc/self/loginuid", O_RDONLY);
  if (fd < 0 || read(fd, buf, sizeof buf - 1) <= 0) return -1;
  close(fd);
  return atol(buf);
}

/* Is fd `ns` the namespace /proc/self/ns/net is? */
static int same_netns(int ns) {
  char a[64] = "", b[64] = "", link[32];
  snprintf(link, sizeof link, "/proc/self/fd/%d", ns);
  if (readlink(link, a, sizeof a - 1) <= 0 || readlink("/proc/self/ns/net", b, sizeof b - 1) <= 0)
    return 0;
  return strcmp(a, b) == 0;
}

static volatile sig_atomic_t trapped;
static void on_trap(int sig) { trapped = sig == SIGTRAP; }

static int oom_score_adj(void) {
  char buf[16] = {0};
  int fd = open("/proc/self/oom_score_adj", O_RDONLY);
  if (fd < 0 || read(fd, buf, sizeof buf - 1) <= 0) return -9999;
  close(fd);
  return atoi(buf);
}

int main(int argc, char **argv) {
  long limit = argc > 1 ? atol(argv[1]) : 10;
  long ms = argc > 2 ? atol(argv[2]) : 200;
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  setvbuf(stdout, NULL, _IOLBF, 0);
  int fd = open("/proc/self/oom_score_adj", O_WRONLY);
  if (fd < 0 || write(fd, "321", 3) != 3) return perror("oom_score_adj"), 1;
  close(fd);
  if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    return perror("prctl"), 1;
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0)
    return perror("membarrier"), 1;
  fd = open("/proc/self/loginuid", O_WRONLY);  /* fails once set: then inherited */
  if (fd >= 0) {
    char uid[16];
    int n = snprintf(uid, sizeof uid, "%u", getuid() ? (unsigned)getuid() : 4242u);
    if (write(fd, uid, (size_t)n) != n) {}
    close(fd);
  }
  int netns = open("/proc/self/ns/net", O_RDONLY);
  signal(SIGTRAP, on_trap);
  for (long i = 1; i <= limit; i++) {
    trapped = 0;
    raise(SIGTRAP);
    printf("%ld oom_score_adj=%d thp_disable=%d no_new_privs=%d membarrier=%s loginuid=%ld "
           "netns_fd=%d sigtrap=%d\n", i,
           oom_score_adj(), prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0),
           prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
           syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0 ? "yes" : "NO",
           loginuid(), same_netns(netns), (int)trapped);
    nanosleep(&ts, NULL);
  }
  return 0;
}
