/* The job scripts/bench/bench checkpoints: fills memory with a chosen mix of
 * page contents, then runs a 1 ms loop that measures its own stalls and keeps
 * a checksum of its data.
 *
 * Usage: bench-workload DIR MIB MIX [NPROCS]
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
 *
 * Reports, one line each:
 *   ready pid=P
 *   gap us=U seq=S          at once after any stall over 20 ms (a freeze,
 *                           or the first iteration after a restore)
 *   report req=R seq=S maxgap_us=U verify=OK|FAIL   when DIR/request holds
 *                           R, more than the last one handled; the longest gap
 *                           since the previous report, then a full checksum
 *                           check of every touched page
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
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

enum { RANDOM, TEXT, ZERO, UNTOUCHED };
static const char *kind_names[] = {"random", "text", "zero", "untouched"};
static unsigned char bucket_kind[100];
static char fifo[4096], request[4096];

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

static uint64_t checksum(const uint64_t *w, uint64_t npages) {
  uint64_t sum = 0;
  for (uint64_t pg = 0; pg < npages; pg++) {
    if (page_kind(pg) == UNTOUCHED) continue; /* reading it would allocate it */
    const uint64_t *q = w + pg * WORDS;
    for (uint64_t i = 0; i < WORDS; i++) sum += q[i] * weight(pg * WORDS + i);
  }
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

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: bench-workload DIR MIB MIX [NPROCS]\n");
    return 2;
  }
  snprintf(fifo, sizeof fifo, "%s/reports", argv[1]);
  snprintf(request, sizeof request, "%s/request", argv[1]);
  uint64_t npages = strtoull(argv[2], NULL, 10) * (1 << 20) / PAGE;
  parse_mix(argv[3]);
  int nprocs = argc > 4 ? atoi(argv[4]) : 1;

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
  uint64_t sum = checksum(w, npages);

  int is_parent = 1;
  for (int i = 1; i < nprocs; i++) {
    pid_t c = fork();
    if (c == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      is_parent = 0;
      break;
    }
  }
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
      uint64_t gap_before = maxgap;
      char extra[48] = "";
      if (rewrite > 0) {
        uint64_t n = rewrite_pages(w, npages, touched_pages, rewrite, &sum, &seed);
        snprintf(extra, sizeof extra, " rewrote=%llu", (unsigned long long)n);
      }
      int ok = checksum(w, npages) == sum;
      say("report req=%llu seq=%llu maxgap_us=%llu verify=%s%s\n", (unsigned long long)req,
          (unsigned long long)seq,
          (unsigned long long)gap_before, ok ? "OK" : "FAIL", extra);
      maxgap = 0;
      last = now_us(); /* the check itself is not a stall */
    }
  }
}
