/* An event loop over a signalfd, a timerfd and an inotify fd (one epoll),
 * holding an flock, a POSIX lock, an OFD lock and a write lease (on a file
 * in DIR, which may be a temporary directory: a dump must not break the
 * lease by opening that file). Each round it sends itself
 * SIGUSR1 through a pidfd of its own and creates a file in DIR, waits until epoll reported all three
 * sources, and prints what each said, plus whether its locks and its lease are still held
 * (flock and OFD: a second open of the file is refused the lock; POSIX: a
 * /proc/locks line with its pid). A restored run must print exactly what an
 * uninterrupted one does.
 * Usage: anon_fds LIMIT INTERVAL_MS DIR [--no-inotify | --hold-watched | --unlink-watched]
 * (--hold-watched keeps DIR/watched open, so that it outlives an unlink;
 * --unlink-watched also unlinks it, and each round changes its mode through
 * the fd it holds and waits for the watch on it to report IN_ATTRIB).
 *        anon_fds --userfaultfd: holds a userfaultfd, prints its fd, waits. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

static void die(const char *what) {
  perror(what);
  exit(1);
}

static char dir[4096];

static int open_in_dir(const char *name) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) die(path);
  return fd;
}

/* Held by another open file description? (flock and OFD locks belong to one.) */
static int flock_held(void) {
  int fd = open_in_dir("flock.lock");
  int held = flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
  close(fd);
  return held;
}

static int ofd_held(void) {
  int fd = open_in_dir("ofd.lock");
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
  if (fcntl(fd, F_OFD_GETLK, &fl) < 0) die("F_OFD_GETLK");
  close(fd);
  return fl.l_type == F_RDLCK;
}

/* Our POSIX write lock on bytes 0-9 of posix.lock, as /proc/locks shows it
 * (no other process locks that file; the pid there is in the pid namespace
 * of /proc's mount, which need not be ours after a restore). */
static int posix_held(ino_t ino) {
  FILE *f = fopen("/proc/locks", "r");
  if (!f) die("/proc/locks");
  char line[256];
  int held = 0;
  while (fgets(line, sizeof line, f)) {
    char kind[16], type[16];
    int pid;
    unsigned maj, min;
    unsigned long i;
    char start[32], end[32];
    if (sscanf(line, "%*d: %15s %*s %15s %d %x:%x:%lu %31s %31s", kind, type, &pid, &maj, &min, &i,
               start, end) == 8 &&
        !strcmp(kind, "POSIX") && !strcmp(type, "WRITE") && pid != -1 && i == ino &&
        !strcmp(start, "0") && !strcmp(end, "9"))
      held = 1;
  }
  fclose(f);
  return held;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc > 1 && !strcmp(argv[1], "--userfaultfd")) {
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | 1 /* UFFD_USER_MODE_ONLY */);
    if (uffd < 0) die("userfaultfd");
    printf("userfaultfd %d\n", uffd);
    for (;;) pause();
  }
  if (argc < 4) return 2;
  long limit = atol(argv[1]), ms = atol(argv[2]);
  snprintf(dir, sizeof dir, "%s", argv[3]);
  int use_inotify = !(argc > 4 && !strcmp(argv[4], "--no-inotify"));
  int unlink_watched = argc > 4 && !strcmp(argv[4], "--unlink-watched");
  if (mkdir(dir, 0755) < 0 && errno != EEXIST) die("mkdir");

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGUSR2);
  sigprocmask(SIG_BLOCK, &set, NULL);
  sigdelset(&set, SIGUSR2);  /* the signalfd reads SIGUSR1 only */
  int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
  struct itimerspec its = {{ms / 1000, (ms % 1000) * 1000000L}, {ms / 1000, (ms % 1000) * 1000000L}};
  if (sfd < 0 || tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) < 0) die("signalfd/timerfd");
  int ifd = -1, wd_dir = 0, wd_file = 0, held = -1;
  if (use_inotify) {
    ifd = inotify_init1(IN_NONBLOCK);
    if (ifd < 0) die("inotify_init1");
    /* Watch numbers that do not start at 1: one added and removed first. */
    held = open_in_dir("watched");
    if (!(argc > 4 && !strcmp(argv[4], "--hold-watched")) && !unlink_watched) close(held);
    char path[4200];
    snprintf(path, sizeof path, "%s/watched", dir);
    int first = inotify_add_watch(ifd, path, IN_OPEN);
    if (first < 0 || inotify_rm_watch(ifd, first) < 0) die("inotify first");
    char buf[4096];
    while (read(ifd, buf, sizeof buf) > 0) {}
    wd_dir = inotify_add_watch(ifd, dir, IN_CREATE);
    wd_file = inotify_add_watch(ifd, path, IN_ATTRIB);
    if (wd_dir < 0 || wd_file < 0) die("inotify_add_watch");
    if (unlink_watched) {
      if (unlink(path) < 0) die("unlink watched");
      while (read(ifd, buf, sizeof buf) > 0) {}  /* its IN_ATTRIB (link count) */
    }
  }
  int self = (int)syscall(SYS_pidfd_open, getpid(), 0);
  if (self < 0) die("pidfd_open");
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN};
  ev.data.u32 = 1;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) < 0) die("epoll sfd");
  ev.data.u32 = 2;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) < 0) die("epoll tfd");
  ev.data.u32 = 4;
  if (use_inotify && epoll_ctl(ep, EPOLL_CTL_ADD, ifd, &ev) < 0) die("epoll ifd");

  int lf = open_in_dir("flock.lock"), pf = open_in_dir("posix.lock"), of = open_in_dir("ofd.lock");
  struct flock pl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
  struct flock ol = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
  if (flock(lf, LOCK_EX | LOCK_NB) < 0 || fcntl(pf, F_SETLK, &pl) < 0 || fcntl(of, F_OFD_SETLK, &ol) < 0)
    die("locks");
  int lease = open_in_dir("lease.file");
  if (fcntl(lease, F_SETLEASE, F_WRLCK) < 0) die("F_SETLEASE");
  struct stat st;
  if (fstat(pf, &st) < 0) die("fstat");

  for (long i = 1; i <= limit; i++) {
    if (syscall(SYS_pidfd_send_signal, self, SIGUSR1, NULL, 0) < 0) die("pidfd_send_signal");
    char name[32];
    snprintf(name, sizeof name, "f%ld", i);
    if (use_inotify) close(open_in_dir(name));
    if (unlink_watched && fchmod(held, i % 2 ? 0600 : 0644) < 0) die("fchmod watched");
    int want = use_inotify ? 7 : 3, seen = 0, signo = 0, got_wd = 0, attrib_wd = 0;
    char created[64] = "-";
    while (seen != want) {
      struct epoll_event got[4];
      int n = epoll_wait(ep, got, 4, 10000);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) die("epoll_wait");
      if (n == 0) {
        fprintf(stderr, "round %ld: nothing for 10 s (seen %d of %d)\n", i, seen, want);
        exit(1);
      }
      for (int k = 0; k < n; k++) {
        uint32_t what = got[k].data.u32;
        if (what == 1) {
          struct signalfd_siginfo si;
          if (read(sfd, &si, sizeof si) == sizeof si) signo = (int)si.ssi_signo;
        } else if (what == 2) {
          uint64_t ticks;
          if (read(tfd, &ticks, sizeof ticks) != sizeof ticks) continue;
        } else if (what == 4) {
          char buf[4096] __attribute__((aligned(8)));
          ssize_t len = read(ifd, buf, sizeof buf);
          for (ssize_t off = 0; off < len;) {
            struct inotify_event *e = (struct inotify_event *)(buf + off);
            if (e->len && !strcmp(e->name, name)) {
              got_wd = e->wd;
              snprintf(created, sizeof created, "%s", e->name);
            }
            if (e->wd == wd_file && (e->mask & IN_ATTRIB)) attrib_wd = e->wd;
            off += (ssize_t)(sizeof *e + e->len);
          }
          if (!got_wd || (unlink_watched && !attrib_wd)) continue;
        }
        seen |= (int)what;
      }
    }
    struct itimerspec now;
    if (timerfd_gettime(tfd, &now) < 0) die("timerfd_gettime");
    printf("%ld: signal %d, timer every %ld ms, inotify wd %d (dir %d file %d) created %s, "
           "flock %d posix %d ofd %d lease %s%s\n",
           i, signo, now.it_interval.tv_sec * 1000 + now.it_interval.tv_nsec / 1000000, got_wd,
           wd_dir, wd_file, created, flock_held(), posix_held(st.st_ino), ofd_held(),
           fcntl(lease, F_GETLEASE) == F_WRLCK ? "write" : "lost",
           unlink_watched ? (attrib_wd == wd_file ? ", deleted file's watch reports attrib" : ", no attrib")
                          : "");
  }
  return 0;
}
