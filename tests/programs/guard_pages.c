/* A counter whose memory holds guard regions (madvise MADV_GUARD_INSTALL,
 * Linux 6.13): pages inside an anonymous mapping, a private file mapping
 * and a thread's stack where any access faults, as thread libraries and
 * allocators place them. Each line says, for every page of those mappings,
 * whether a write to it faulted, and a checksum of the pages that hold
 * data: a restored run prints the same lines only if the guards came back
 * where they were and nothing else faults. Prints "no guard regions" and
 * exits 3 where the kernel has none.
 * Usage: guard_pages DATA_FILE LIMIT INTERVAL_MS */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define PAGES 8
#define MADV_GUARD_INSTALL_ 102

static sigjmp_buf jump;
static volatile sig_atomic_t probing;

static void on_segv(int sig) {
  (void)sig;
  if (probing) siglongjmp(jump, 1);
  _exit(99);
}

/* 'G' where writing the page faults, '.' where it works (the byte is put
 * back as it was). */
static void probe(volatile uint8_t *base, char *out) {
  for (int i = 0; i < PAGES; i++) {
    volatile uint8_t *p = base + (size_t)i * PAGE + 100;
    probing = 1;
    if (sigsetjmp(jump, 1) == 0) {
      uint8_t v = *p;
      *p = (uint8_t)(v + 1);
      *p = v;
      out[i] = '.';
    } else {
      out[i] = 'G';
    }
    probing = 0;
  }
  out[PAGES] = 0;
}

static uint64_t sum(const uint8_t *base, const char *map) {
  uint64_t s = 1469598103934665603ull;
  for (int i = 0; i < PAGES; i++)
    if (map[i] == '.')
      for (size_t k = 0; k < PAGE; k++) s = (s ^ base[(size_t)i * PAGE + k]) * 1099511628211ull;
  return s;
}

static uint8_t *thread_area;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int ready;

/* A thread whose stack's lowest pages are guards (as a thread library
 * guarding its stacks with guard regions would put them). */
static void *worker(void *arg) {
  (void)arg;
  pthread_mutex_lock(&mu);
  ready = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  for (;;) pause();
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: guard_pages DATA_FILE LIMIT INTERVAL_MS\n");
    return 2;
  }
  int limit = atoi(argv[2]), interval = atoi(argv[3]);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_segv;
  sa.sa_flags = SA_NODEFER;
  sigaction(SIGSEGV, &sa, NULL);

  uint8_t *anon = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  for (size_t i = 0; i < PAGES * PAGE; i++) anon[i] = (uint8_t)(i * 7 + i / PAGE);
  if (madvise(anon + PAGE, 2 * PAGE, MADV_GUARD_INSTALL_) != 0) {
    printf("no guard regions\n");
    return 3;
  }
  madvise(anon + 6 * PAGE, PAGE, MADV_GUARD_INSTALL_);

  int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
  uint8_t page[PAGE];
  for (int i = 0; i < PAGES; i++) {
    memset(page, 'a' + i, sizeof page);
    if (write(fd, page, sizeof page) != PAGE) return 1;
  }
  uint8_t *file = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  close(fd);
  file[3 * PAGE] = 'X';  /* one page of its own (copied on write) */
  madvise(file, PAGE, MADV_GUARD_INSTALL_);
  madvise(file + 4 * PAGE, 2 * PAGE, MADV_GUARD_INSTALL_);

  size_t stack_size = 64 * PAGE;
  thread_area = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  madvise(thread_area, 2 * PAGE, MADV_GUARD_INSTALL_);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstack(&attr, thread_area, stack_size);
  pthread_t t;
  pthread_create(&t, &attr, worker, NULL);
  pthread_mutex_lock(&mu);
  while (!ready) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);

  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  for (int n = 1; n <= limit; n++) {
    char a[PAGES + 1], f[PAGES + 1], s[PAGES + 1];
    probe(anon, a);
    probe(file, f);
    probe(thread_area, s);
    printf("%d anon %s %016llx file %s %016llx stack %s\n", n, a, (unsigned long long)sum(anon, a),
           f, (unsigned long long)sum(file, f), s);
    fflush(stdout);
    nanosleep(&ts, NULL);
  }
  return 0;
}
