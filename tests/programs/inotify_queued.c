/* An inotify instance holding events nobody has read yet: a watch on DIR
 * for IN_CREATE, then DIR/early made before the first tick and its event
 * left queued. Tick I prints "tick I"; after the last tick DIR/late is made,
 * the queue read and "created NAMES" printed, the names its events carry
 * ("early late" in a run nobody interrupted).
 * Usage: inotify_queued DIR TICKS INTERVAL_MS */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

static int make(const char *dir, const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    perror("inotify_queued: open");
    return 0;
  }
  close(fd);
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: inotify_queued DIR TICKS INTERVAL_MS\n");
    return 2;
  }
  const int ticks = atoi(argv[2]), interval_ms = atoi(argv[3]);
  int ifd = inotify_init1(IN_NONBLOCK);
  if (ifd < 0 || inotify_add_watch(ifd, argv[1], IN_CREATE) < 0) {
    perror("inotify_queued: inotify");
    return 1;
  }
  if (!make(argv[1], "early")) return 1;
  struct timespec pause = {interval_ms / 1000, (long)(interval_ms % 1000) * 1000000};
  for (int i = 1; i <= ticks; i++) {
    printf("tick %d\n", i);
    fflush(stdout);
    nanosleep(&pause, NULL);
  }
  if (!make(argv[1], "late")) return 1;
  char buf[4096] __attribute__((aligned(8)));
  printf("created");
  ssize_t n;
  while ((n = read(ifd, buf, sizeof buf)) > 0)
    for (ssize_t off = 0; off < n;) {
      const struct inotify_event *e = (const struct inotify_event *)(buf + off);
      printf(" %s", e->len ? e->name : "?");
      off += (ssize_t)sizeof *e + e->len;
    }
  printf("\n");
  return 0;
}
