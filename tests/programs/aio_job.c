/* Kernel AIO (io_setup / io_submit / io_getevents, as libaio and some MPI-IO
 * and database codes use it), by raw system calls. Each round reads 16 bytes
 * of its own executable at offset 16*i through its AIO context and prints
 * them; the context is made once, before the loop, so a restored run uses
 * the context the dump saw. Usage: aio_job N INTERVAL_MS
 *        aio_job --uncollected TICKS INTERVAL_MS: 130 reads submitted and
 *          collected one by one (the ring wraps), then three more left
 *          completed in the ring; prints the ring's head and tail, a line
 *          per tick, then collects the three and prints them, and one more
 *          read, and the ring's head and tail again. */
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Submits one read of 16 bytes at `offset` into buf, tagged `data`. */
static int submit_read(aio_context_t ctx, int fd, unsigned char *buf, long offset, long data) {
  struct iocb cb;
  memset(&cb, 0, sizeof cb);
  cb.aio_lio_opcode = IOCB_CMD_PREAD;
  cb.aio_fildes = (uint32_t)fd;
  cb.aio_buf = (uint64_t)(uintptr_t)buf;
  cb.aio_nbytes = 16;
  cb.aio_offset = offset;
  cb.aio_data = (uint64_t)data;
  struct iocb *list[1] = {&cb};
  return syscall(SYS_io_submit, ctx, 1, list) == 1 ? 0 : -1;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 10, ms = argc > 2 ? atol(argv[2]) : 100;
  setvbuf(stdout, NULL, _IOLBF, 0);
  aio_context_t ctx = 0;
  if (syscall(SYS_io_setup, 8, &ctx) < 0) return perror("io_setup"), 1;
  int fd = open("/proc/self/exe", O_RDONLY);
  if (fd < 0) return perror("open"), 1;
  if (argc > 1 && strcmp(argv[1], "--uncollected") == 0) {
    long ticks = argc > 2 ? atol(argv[2]) : 5;
    ms = argc > 3 ? atol(argv[3]) : 100;
    static unsigned char bufs[4][16];
    const volatile unsigned *ring = (const volatile unsigned *)ctx; /* id, nr, head, tail */
    struct io_event ev[3];
    for (long i = 0; i < 130; i++) {
      if (submit_read(ctx, fd, bufs[0], 0, i) < 0) return perror("io_submit"), 1;
      if (syscall(SYS_io_getevents, ctx, 1, 1, ev, NULL) != 1) return perror("io_getevents"), 1;
    }
    for (int k = 0; k < 3; k++)
      if (submit_read(ctx, fd, bufs[k], 64 + 16 * k, 1001 + k) < 0) return perror("io_submit"), 1;
    while ((ring[3] + ring[1] - ring[2]) % ring[1] != 3) usleep(1000);
    printf("ring head %u tail %u\n", ring[2], ring[3]);
    for (long t = 1; t <= ticks; t++) {
      printf("tick %ld\n", t);
      struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    }
    if (syscall(SYS_io_getevents, ctx, 3, 3, ev, NULL) != 3) return perror("io_getevents"), 1;
    for (int k = 0; k < 3; k++) {
      int which = (int)ev[k].data - 1001;
      printf("event %d: data %lld res %lld own iocb %d bytes", k, (long long)ev[k].data,
             (long long)ev[k].res, ev[k].obj != 0);
      for (int b = 0; b < 16 && which >= 0 && which < 3; b++) printf(" %02x", bufs[which][b]);
      printf("\n");
    }
    if (submit_read(ctx, fd, bufs[3], 256, 2001) < 0) return perror("io_submit"), 1;
    if (syscall(SYS_io_getevents, ctx, 1, 1, ev, NULL) != 1) return perror("io_getevents"), 1;
    printf("one more: data %lld res %lld; ring head %u tail %u\n", (long long)ev[0].data,
           (long long)ev[0].res, ring[2], ring[3]);
    return syscall(SYS_io_destroy, ctx) == 0 ? 0 : 1;
  }
  for (long i = 1; i <= n; i++) {
    unsigned char buf[16];
    if (submit_read(ctx, fd, buf, 16 * i, i) < 0) return perror("io_submit"), 1;
    struct io_event ev;
    if (syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL) != 1) return perror("io_getevents"), 1;
    printf("%ld: data %lld res %lld bytes", i, (long long)ev.data, (long long)ev.res);
    for (int k = 0; k < 16; k++) printf(" %02x", buf[k]);
    printf("\n");
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
  }
  return syscall(SYS_io_destroy, ctx) == 0 ? 0 : 1;
}
