/* The job scripts/bench/bench checkpoints: fills memory with a chosen mix of
 * page contents, then runs a 1 ms loop that measures its own stalls and keeps
 * a checksum of its data.
 *
 * Usage: bench-workload DIR MIB MIX [NPROCS] [KEY=VALUE...]
 *   DIR     holds the fifo "reports", where reports go, and the file
 *           "request", which holds a number the bench raises to ask for a
 *           report. Both are opened, used and closed each time, so no
 *           descriptor of them exists when the job is checkpointed, and the
 *           job needs no cooperation from the bench beyond a file.
 *   MIB     size of the data region in MiB
 *   MIX     page kinds in percent, e.g. "random:10,zero:90"; kinds are
 *           random (incompressible), text (consecutive decimal numbers),
 *           zero (written with zeros, so resident) and untouched (never
 *           accessed). Page i gets the kind of bucket i % 100, so the kinds
 *           are interleaved page by page.
 *   NPROCS  with N > 1 the region is MAP_SHARED and N-1 children are forked
 *           that share it and sleep in the same 1 ms loop (default 1)
 * Optional keys give the job a shape (all set up by the parent after the
 * fork, before "ready"; the 1 ms loop and the reports stay in the main
 * thread):
 *   threads=N   N more threads, each sleeping 100 ms in a loop; every report
 *               checks that the process still has 1 + N threads
 *   maps=N      N separate one-page private anonymous mappings, each touched
 *               (one random word), with an unmapped page between neighbours
 *               so the kernel cannot merge them; part of the checksum
 *   fds=N       N open descriptors, each its own open(2) of DIR/fds.data
 *               (created, 4 KiB) at its own offset (i % 4096); the soft
 *               RLIMIT_NOFILE is raised to the hard one first (exit 3 when
 *               that is too low); every report checks every offset
 *   reserve=SIZE, sparse=N
 *               a MAP_NORESERVE | MAP_PRIVATE | MAP_ANONYMOUS reservation of
 *               SIZE bytes (suffix K, M, G or T) with N pages spread evenly
 *               over it filled with random data; part of the checksum. Exits
 *               3, saying so and naming vm.overcommit_memory, when the kernel
 *               refuses the reservation
 * Exit status: 2 bad arguments, 3 the machine refuses the shape, 1 other
 * setup failures.
 *
 * Reports, one line each:
 *   ready pid=P
 *   gap us=U seq=S          at once after any stall over 20 ms (a freeze,
 *                           or the first iteration after a restore)
 *   report req=R seq=S maxgap_us=U verify=OK|FAIL [failed=WHAT]
 *                           when DIR/request holds R, more than the last one
 *                           handled; the longest gap since the previous
 *                           report, then a full checksum check of every
 *                           touched page (and of the shape's threads, fds);
 *                           WHAT names what failed: checksum, threads, fds
 *   report req=R seq=S maxgap_us=U verify=OK|FAIL rewrote=N
 *                           when DIR/request holds "R rewrite=PCT": first
 *                           rewrites PCT percent (a decimal, e.g. 1 or 0.5) of
 *                           the touched pages, spread evenly over the region,
 *                           each whole page with new random data, then reports
 *                           as above; N is the number of pages rewritten.
 *                           Each such request starts at another page, so
 *                           successive ones rewrite mostly different pages.
 * Each iteration of the loop also changes one word of one touched page, so a
 * restored job proves the memory it got back is the memory it had. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

enum { RANDOM, TEXT, ZERO, UNTOUCHED };
static const char *kind_names[] = {"random", "text", "zero", "untouched"};
static unsigned char bucket_kind[100];
static char fifo[4096], request[4096];

/* The job's shape (KEY=VALUE arguments). */
static struct {
  int nprocs, threads, maps, fds;
  uint64_t reserve, sparse;
} opt = {.nprocs = 1};

#define PAGE 4096UL
#define WORDS (PAGE / 8)

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  int fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return; /* nobody is listening: not an error for the job */
  if (write(fd, line, (size_t)n) < 0) { /* a full fifo drops the line */ }
  close(fd);
}

static int page_kind(uint64_t page) { return bucket_kind[page % 100]; }

static uint64_t xorshift(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Consecutive decimal numbers separated by spaces, like a text log of step
 * numbers: lz4 gets them to ~40 %. (Random numbers as text stay at ~93 %
 * under lz4, which has no entropy coding.) */
static uint64_t next_number = 1000000000;
static void fill_text(char *p) {
  char *end = p + PAGE;
  while (p < end) {
    char digits[24];
    int n = 0;
    uint64_t v = next_number++;
    do digits[n++] = (char)('0' + v % 10); while (v /= 10);
    while (n && p < end) *p++ = digits[--n];
    if (p < end) *p++ = ' ';
  }
}

/* Position-weighted sum: a changed, moved or swapped word changes it, and a
 * change of one word by d changes it by d * weight, so it can be kept up to
 * date as the loop writes. */
static uint64_t weight(uint64_t word) { return 2 * word + 1; }

/* Pages outside the data region that the checksum covers too: the shape's
 * one-page mappings and the touched pages of its reservation. They are
 * numbered after the data region's pages. */
static uint64_t **extra_pages;
static uint64_t nextra;

static uint64_t page_sum(const uint64_t *q, uint64_t pg) {
  uint64_t sum = 0;
  for (uint64_t i = 0; i < WORDS; i++) sum += q[i] * weight(pg * WORDS + i);
  return sum;
}

static uint64_t checksum(const uint64_t *w, uint64_t npages) {
  uint64_t sum = 0;
  for (uint64_t pg = 0; pg < npages; pg++) {
    if (page_kind(pg) == UNTOUCHED) continue; /* reading it would allocate it */
    sum += page_sum(w + pg * WORDS, pg);
  }
  for (uint64_t k = 0; k < nextra; k++) sum += page_sum(extra_pages[k], npages + k);
  return sum;
}

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* The number in DIR/request, or 0, and in *rewrite the percentage of a
 * "rewrite=PCT" after it, or 0. Checked every 10 ms. */
static uint64_t read_request(double *rewrite) {
  char buf[64] = {0};
  *rewrite = 0;
  int fd = open(request, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  if (read(fd, buf, sizeof buf - 1) < 0) buf[0] = 0;
  close(fd);
  char *opt = strstr(buf, "rewrite=");
  if (opt) *rewrite = strtod(opt + strlen("rewrite="), NULL);
  return strtoull(buf, NULL, 10);
}

/* Rewrites pct percent of the touched pages with new random data, spread
 * evenly from a start that moves with each call; keeps *sum up to date.
 * Returns the number of pages rewritten. */
static uint64_t rewrite_pages(uint64_t *w, uint64_t npages, uint64_t touched_pages, double pct,
                              uint64_t *sum, uint64_t *seed) {
  uint64_t n = (uint64_t)((double)touched_pages * pct / 100 + 0.5), done = 0;
  if (n == 0 || touched_pages == 0) return 0;
  if (n > touched_pages) n = touched_pages;
  uint64_t start = xorshift(seed) % npages;
  for (uint64_t k = 0; k < n; k++) {
    uint64_t pg = (start + k * npages / n) % npages;
    while (page_kind(pg) == UNTOUCHED) pg = (pg + 1) % npages;
    uint64_t *q = w + pg * WORDS;
    for (uint64_t i = 0; i < WORDS; i++) {
      uint64_t v = xorshift(seed);
      *sum += (v - q[i]) * weight(pg * WORDS + i);
      q[i] = v;
    }
    done++;
  }
  return done;
}

static void parse_mix(const char *mix) {
  int next = 0;
  char *copy = strdup(mix), *save = NULL;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *colon = strchr(tok, ':');
    int k = -1, pct = colon ? atoi(colon + 1) : 0;
    if (colon) *colon = 0;
    for (int i = 0; i < 4; i++)
      if (!strcmp(tok, kind_names[i])) k = i;
    if (k < 0 || pct <= 0 || next + pct > 100) {
      fprintf(stderr, "bench-workload: bad mix '%s'\n", mix);
      exit(2);
    }
    for (int i = 0; i < pct; i++) bucket_kind[next++] = (unsigned char)k;
  }
  if (next != 100) {
    fprintf(stderr, "bench-workload: mix '%s' does not add up to 100\n", mix);
    exit(2);
  }
  free(copy);
}

static uint64_t parse_size(const char *text) {
  char *end;
  uint64_t v = strtoull(text, &end, 10);
  switch (*end) {
    case 'T': v <<= 10; /* fall through */
    case 'G': v <<= 10; /* fall through */
    case 'M': v <<= 10; /* fall through */
    case 'K': v <<= 10; end++; break;
    default: break;
  }
  if (*end) {
    fprintf(stderr, "bench-workload: bad size '%s'\n", text);
    exit(2);
  }
  return v;
}

/* NPROCS (a plain number) and KEY=VALUE arguments. */
static void parse_options(int argc, char **argv) {
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *eq = strchr(a, '=');
    if (!eq) opt.nprocs = atoi(a);
    else if (!strncmp(a, "threads=", 8)) opt.threads = atoi(eq + 1);
    else if (!strncmp(a, "maps=", 5)) opt.maps = atoi(eq + 1);
    else if (!strncmp(a, "fds=", 4)) opt.fds = atoi(eq + 1);
    else if (!strncmp(a, "reserve=", 8)) opt.reserve = parse_size(eq + 1);
    else if (!strncmp(a, "sparse=", 7)) opt.sparse = strtoull(eq + 1, NULL, 10);
    else {
      fprintf(stderr, "bench-workload: unknown option '%s'\n", a);
      exit(2);
    }
  }
  if (opt.nprocs < 1 || opt.threads < 0 || opt.maps < 0 || opt.fds < 0 ||
      (opt.sparse && opt.sparse > opt.reserve / PAGE)) {
    fprintf(stderr, "bench-workload: bad options\n");
    exit(2);
  }
}

static void add_extra_page(uint64_t *page) {
  static uint64_t cap;
  if (nextra == cap) {
    cap = cap ? cap * 2 : 1024;
    extra_pages = realloc(extra_pages, cap * sizeof *extra_pages);
    if (!extra_pages) {
      perror("bench-workload: realloc");
      exit(1);
    }
  }
  extra_pages[nextra++] = page;
}

/* maps=N: one mapping of 2N pages, then every other page unmapped. */
static void make_maps(uint64_t *seed) {
  if (!opt.maps) return;
  size_t len = 2 * (size_t)opt.maps * PAGE;
  char *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) {
    perror("bench-workload: mmap of the one-page mappings");
    exit(1);
  }
  for (int i = 0; i < opt.maps; i++) {
    uint64_t *q = (uint64_t *)(base + 2 * (size_t)i * PAGE);
    q[(uint64_t)i % WORDS] = xorshift(seed);
    add_extra_page(q);
    if (munmap(base + (2 * (size_t)i + 1) * PAGE, PAGE)) {
      perror("bench-workload: munmap between the one-page mappings");
      exit(1);
    }
  }
}

static int overcommit_memory(void) {
  int v = -1;
  FILE *f = fopen("/proc/sys/vm/overcommit_memory", "r");
  if (f) {
    if (fscanf(f, "%d", &v) != 1) v = -1;
    fclose(f);
  }
  return v;
}

/* reserve=SIZE sparse=N: N pages spread evenly over the reservation, each
 * filled with random words. */
static void make_reservation(uint64_t *seed) {
  if (!opt.reserve) return;
  char *base = mmap(NULL, opt.reserve, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    int err = errno;
    fprintf(stderr, "bench-workload: the kernel refuses a MAP_NORESERVE reservation of %llu GiB: "
            "%s (vm.overcommit_memory=%d, where 2 ignores MAP_NORESERVE; or ulimit -v)\n",
            (unsigned long long)(opt.reserve >> 30), strerror(err), overcommit_memory());
    exit(3);
  }
  uint64_t pages = opt.reserve / PAGE;
  for (uint64_t k = 0; k < opt.sparse; k++) {
    uint64_t *q = (uint64_t *)(base + k * (pages / opt.sparse) * PAGE);
    for (uint64_t i = 0; i < WORDS; i++) q[i] = xorshift(seed);
    add_extra_page(q);
  }
}

/* fds=N: DIR/fds.data opened N times, descriptor i at offset i % 4096. */
static int *fds;
static void make_fds(const char *dir) {
  if (!opt.fds) return;
  struct rlimit r;
  getrlimit(RLIMIT_NOFILE, &r);
  if (r.rlim_max != RLIM_INFINITY && r.rlim_max < (rlim_t)opt.fds + 64) {
    fprintf(stderr, "bench-workload: fds=%d needs RLIMIT_NOFILE over %d, the hard limit is %llu\n",
            opt.fds, opt.fds + 64, (unsigned long long)r.rlim_max);
    exit(3);
  }
  r.rlim_cur = r.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &r)) {
    perror("bench-workload: setrlimit RLIMIT_NOFILE");
    exit(1);
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/fds.data", dir);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  char block[PAGE];
  memset(block, 'x', sizeof block);
  if (fd < 0 || write(fd, block, sizeof block) != (ssize_t)sizeof block) {
    perror("bench-workload: creating fds.data");
    exit(1);
  }
  close(fd);
  fds = calloc((size_t)opt.fds, sizeof *fds);
  for (int i = 0; i < opt.fds; i++) {
    fds[i] = open(path, O_RDONLY);
    if (fds[i] < 0 || lseek(fds[i], i % (int)PAGE, SEEK_SET) < 0) {
      fprintf(stderr, "bench-workload: opening fds.data for the %dth time: %s\n", i + 1,
              strerror(errno));
      exit(1);
    }
  }
}

static int fds_ok(void) {
  for (int i = 0; i < opt.fds; i++)
    if (lseek(fds[i], 0, SEEK_CUR) != i % (int)PAGE) return 0;
  return 1;
}

static void *sleeper(void *arg) {
  (void)arg;
  struct timespec t = {0, 100000000};
  for (;;) clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL);
  return NULL;
}

static void make_threads(void) {
  for (int i = 0; i < opt.threads; i++) {
    pthread_t t;
    int err = pthread_create(&t, NULL, sleeper, NULL);
    if (err) {
      fprintf(stderr, "bench-workload: thread %d: %s\n", i + 1, strerror(err));
      exit(1);
    }
  }
}

static int threads_ok(void) {
  if (!opt.threads) return 1;
  DIR *d = opendir("/proc/self/task");
  int n = 0;
  if (!d) return 0;
  for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
  closedir(d);
  return n == 1 + opt.threads;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: bench-workload DIR MIB MIX [NPROCS] [KEY=VALUE...]\n");
    return 2;
  }
  snprintf(fifo, sizeof fifo, "%s/reports", argv[1]);
  snprintf(request, sizeof request, "%s/request", argv[1]);
  uint64_t npages = strtoull(argv[2], NULL, 10) * (1 << 20) / PAGE;
  parse_mix(argv[3]);
  parse_options(argc - 4, argv + 4);
  int nprocs = opt.nprocs;

  int flags = MAP_ANONYMOUS | (nprocs > 1 ? MAP_SHARED : MAP_PRIVATE);
  uint64_t *w = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (w == MAP_FAILED) {
    perror("bench-workload: mmap");
    return 1;
  }
  uint64_t seed = 0x9e3779b97f4a7c15ULL;
  for (uint64_t pg = 0; pg < npages; pg++) {
    uint64_t *q = w + pg * WORDS;
    switch (page_kind(pg)) {
      case RANDOM: for (uint64_t i = 0; i < WORDS; i++) q[i] = xorshift(&seed); break;
      case TEXT: fill_text((char *)q); break;
      case ZERO: memset(q, 0, PAGE); break;
      default: break;
    }
  }

  int is_parent = 1;
  for (int i = 1; i < nprocs; i++) {
    pid_t c = fork();
    if (c == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      is_parent = 0;
      break;
    }
  }
  if (is_parent) {
    make_fds(argv[1]);
    make_maps(&seed);
    make_reservation(&seed);
    make_threads();
  }
  /* Only the parent checks the data. A child that summed the whole shared
   * region too (as every process did before) was still at it, on this
   * machine's 2 cores, when the bench dumped the job: its CPU time then
   * delayed the parent's loop and showed as freeze. */
  uint64_t sum = is_parent ? checksum(w, npages) : 0;
  /* The request count is read before saying ready: the bench asks for the
   * first report as soon as it sees "ready". */
  double rewrite = 0;
  uint64_t seq = 0, maxgap = 0, last = now_us(), handled = read_request(&rewrite);
  if (is_parent) say("ready pid=%d\n", getpid());
  uint64_t touched = 0, touched_pages = 0;
  for (uint64_t pg = 0; pg < 100 && pg < npages; pg++) touched += page_kind(pg) != UNTOUCHED;
  for (uint64_t pg = 0; pg < npages; pg++) touched_pages += page_kind(pg) != UNTOUCHED;
  struct timespec ms = {0, 1000000};
  for (;;) {
    clock_nanosleep(CLOCK_MONOTONIC, 0, &ms, NULL);
    uint64_t t = now_us(), gap = t - last;
    last = t;
    if (gap > maxgap) maxgap = gap;
    if (!is_parent) continue; /* children only sleep: the parent owns the data */
    seq++;
    if (gap > 20000) say("gap us=%llu seq=%llu\n", (unsigned long long)gap, (unsigned long long)seq);
    if (touched) {
      /* Change one word of a touched page, a different page each time. */
      uint64_t pg = (seq * 7919) % npages;
      while (page_kind(pg) == UNTOUCHED) pg = (pg + 1) % npages;
      uint64_t word = pg * WORDS + seq % WORDS;
      w[word] += seq;
      sum += seq * weight(word);
    }
    uint64_t req = seq % 10 ? 0 : read_request(&rewrite);
    if (req > handled) {
      handled = req;
      uint64_t gap_before = maxgap, check_start = now_us();
      char extra[48] = "";
      if (rewrite > 0) {
        uint64_t n = rewrite_pages(w, npages, touched_pages, rewrite, &sum, &seed);
        snprintf(extra, sizeof extra, " rewrote=%llu", (unsigned long long)n);
      }
      const char *failed = checksum(w, npages) != sum ? " failed=checksum"
                           : !threads_ok()            ? " failed=threads"
                           : !fds_ok()                ? " failed=fds"
                                                      : "";
      say("report req=%llu seq=%llu maxgap_us=%llu verify=%s%s%s\n", (unsigned long long)req,
          (unsigned long long)seq,
          (unsigned long long)gap_before, *failed ? "FAIL" : "OK", failed, extra);
      maxgap = 0;
      /* The check itself is not a stall; a stop before it still is. (Setting
       * last to now would hide a restore when the job was dumped while
       * reading the request file: the restored job answers the request
       * first, and its next gap would then be measured from after the
       * restore.) */
      last += now_us() - check_start;
    }
  }
}
