/* Kernel AIO (io_setup / io_submit / io_getevents, as libaio and some MPI-IO
 * and database codes use it), by raw system calls. Each round reads 16 bytes
 * of its own executable at offset 16*i through its AIO context and prints
 * them; the context is made once, before the loop, so a restored run uses
 * the context the dump saw. Usage: aio_job N INTERVAL_MS
 *        aio_job --uncollected: one read completes and is left in the ring
 *          (never io_getevents), prints "ready", and waits. */
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
    static unsigned char buf[16];
    if (submit_read(ctx, fd, buf, 0, 0) < 0) return perror("io_submit"), 1;
    const volatile unsigned *ring = (const volatile unsigned *)ctx;  /* id, nr, head, tail */
    while (ring[2] == ring[3]) usleep(1000);
    printf("ready\n");
    for (;;) pause();
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
