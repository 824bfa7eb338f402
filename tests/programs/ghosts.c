/* Deleted files and a memfd that a job keeps using. At the start: a scratch
 * file in DIR, opened twice (the second time through /proc/self/fd), made
 * sparse (2 MiB with a hole), mapped shared and private, then unlinked; a
 * memfd with a seal, mapped shared and private; a FIFO in DIR, opened both
 * ways, then unlinked; a subdirectory of DIR as cwd, then removed; and an
 * O_PATH fd on a symbolic link DIR.link.
 * Each round appends a line to the scratch file, bumps a counter through
 * the shared mapping, writes into the memfd, passes a byte through the
 * FIFO (one byte stays unread in it), and prints what it sees through every other path: the offset, the
 * counter read back, what the private mappings see (the pages they never
 * copied follow the file), the links as /proc shows them, seals, the hole,
 * mode and link counts. A restored run prints the same only if every one
 * of them came back as one inode again.
 * Usage: ghosts DIR LIMIT INTERVAL_MS */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FILE_SIZE (2 << 20)
#define PAGE 4096

static int ends_with(const char *s, const char *tail) {
  size_t a = strlen(s), b = strlen(tail);
  return a >= b && strcmp(s + a - b, tail) == 0;
}

static void link_of(const char *what, char *buf, size_t len) {
  ssize_t n = readlink(what, buf, len - 1);
  buf[n < 0 ? 0 : n] = 0;
}

int main(int argc, char **argv) {
  if (argc < 4) return fprintf(stderr, "usage: ghosts DIR LIMIT INTERVAL_MS\n"), 2;
  const char *dir = argv[1];
  long limit = atol(argv[2]), ms = atol(argv[3]);
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  setvbuf(stdout, NULL, _IOLBF, 0);
  char path[4096], fifo[4096], sub[4096], self[64];

  snprintf(path, sizeof path, "%s/scratch", dir);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0640);
  if (fd < 0 || ftruncate(fd, FILE_SIZE) < 0) return perror(path), 1;
  snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  int again = open(self, O_RDONLY);
  if (again < 0) return perror(self), 1;
  if (pwrite(fd, "tail", 4, FILE_SIZE - PAGE) != 4) return perror("pwrite"), 1;
  unsigned *shared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  char *private = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, fd, FILE_SIZE - PAGE);
  if (shared == MAP_FAILED || private == MAP_FAILED) return perror("mmap"), 1;
  if (unlink(path) < 0) return perror("unlink"), 1;
  if (lseek(fd, PAGE, SEEK_SET) != PAGE) return perror("lseek"), 1;

  int mfd = memfd_create("snap-test", MFD_ALLOW_SEALING);
  if (mfd < 0 || ftruncate(mfd, PAGE) < 0 || fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK) < 0)
    return perror("memfd"), 1;
  long *mshared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  long *mprivate = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, mfd, 0);
  if (mshared == MAP_FAILED || mprivate == MAP_FAILED) return perror("mmap memfd"), 1;
  mprivate[1] = -1;  /* one copied page: its own from now on */

  snprintf(fifo, sizeof fifo, "%s/fifo", dir);
  if (mkfifo(fifo, 0600) < 0) return perror(fifo), 1;
  int fr = open(fifo, O_RDONLY | O_NONBLOCK), fw = open(fifo, O_WRONLY);
  if (fr < 0 || fw < 0 || unlink(fifo) < 0) return perror("fifo"), 1;
  if (write(fw, "@", 1) != 1) return perror("fifo write"), 1;  /* one byte always unread */

  /* Not a deleted file: an O_PATH fd on a symbolic link itself, beside DIR. */
  char slink[4096];
  snprintf(slink, sizeof slink, "%s.link", dir);
  if (symlink("scratch-target", slink) < 0) return perror(slink), 1;
  int lfd = open(slink, O_PATH | O_NOFOLLOW);
  if (lfd < 0) return perror(slink), 1;

  snprintf(sub, sizeof sub, "%s/cwd", dir);
  if (mkdir(sub, 0750) < 0 || chdir(sub) < 0 || rmdir(sub) < 0) return perror(sub), 1;

  for (long i = 1; i <= limit; i++) {
    char line[64], got = 0, l1[4096], l2[4096], l3[4096];
    int n = snprintf(line, sizeof line, "round %ld\n", i);
    if (write(fd, line, (size_t)n) != n) return perror("write"), 1;
    shared[0] += (unsigned)i;
    char tag = (char)('A' + i % 26);
    if (pwrite(fd, &tag, 1, FILE_SIZE - PAGE + 4) != 1) return perror("pwrite tag"), 1;
    mshared[0] += i;
    if (pwrite(mfd, &i, sizeof i, (off_t)(8 * (i % 64 + 2))) != sizeof i) return perror("pwrite"), 1;
    char c = (char)('a' + i % 26);
    if (write(fw, &c, 1) != 1 || read(fr, &got, 1) != 1) return perror("fifo io"), 1;
    unsigned counter = 0;
    if (pread(again, &counter, sizeof counter, 0) != sizeof counter) return perror("pread"), 1;
    long msum = 0, v = 0;
    for (int k = 2; k < 66; k++) msum += pread(mfd, &v, sizeof v, 8 * k) == sizeof v ? v : 0;
    struct stat a, b, m, cwd;
    fstat(fd, &a);
    fstat(again, &b);
    fstat(mfd, &m);
    stat(".", &cwd);
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    link_of(self, l1, sizeof l1);
    snprintf(self, sizeof self, "/proc/self/fd/%d", mfd);
    link_of(self, l2, sizeof l2);
    link_of("/proc/self/cwd", l3, sizeof l3);
    char target[64] = "";
    ssize_t tl = readlinkat(lfd, "", target, sizeof target - 1);
    target[tl < 0 ? 0 : tl] = 0;
    printf("%s ", target);
    printf("%ld: offset %ld counter %u/%u tail %s memfd %ld/%ld private %ld seals %#x fifo %c "
           "hole@%ld size %ld mode %o nlink %ld same %d links %d %d %d cwd %o/%ld\n",
           i, (long)lseek(fd, 0, SEEK_CUR), counter, shared[0], private, msum, mshared[0],
           mprivate[1] + mprivate[0], fcntl(mfd, F_GET_SEALS), got,
           (long)lseek(again, PAGE, SEEK_HOLE), (long)a.st_size, a.st_mode & 07777,
           (long)a.st_nlink, a.st_ino == b.st_ino && a.st_dev == b.st_dev,
           ends_with(l1, "/scratch (deleted)"), strcmp(l2, "/memfd:snap-test (deleted)") == 0,
           ends_with(l3, "/cwd (deleted)"), cwd.st_mode & 07777, (long)cwd.st_nlink);
    (void)m;
    nanosleep(&ts, NULL);
  }
  return 0;
}
