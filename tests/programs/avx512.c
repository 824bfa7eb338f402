/* Keeps known values in AVX-512 registers (zmm16-zmm31 and mask registers
 * k1-k7) across a long wait and checks them every round: a restored process
 * whose extended state did not come back prints MISMATCH.
 * Usage: avx512 ROUNDS INTERVAL_MS. Exits 3 (with a message) when the CPU
 * has no AVX-512F. */
#include <cpuid.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int has_avx512f(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  return (b >> 16) & 1;
}

/* Stores zmm16..zmm31 to the 1 KiB at asm operand %0. */
#define STORE_ZMM16_31                                                                       \
  "vmovdqu64 %%zmm16, 0(%0)\n vmovdqu64 %%zmm17, 64(%0)\n vmovdqu64 %%zmm18, 128(%0)\n"    \
  "vmovdqu64 %%zmm19, 192(%0)\n vmovdqu64 %%zmm20, 256(%0)\n vmovdqu64 %%zmm21, 320(%0)\n" \
  "vmovdqu64 %%zmm22, 384(%0)\n vmovdqu64 %%zmm23, 448(%0)\n vmovdqu64 %%zmm24, 512(%0)\n" \
  "vmovdqu64 %%zmm25, 576(%0)\n vmovdqu64 %%zmm26, 640(%0)\n vmovdqu64 %%zmm27, 704(%0)\n" \
  "vmovdqu64 %%zmm28, 768(%0)\n vmovdqu64 %%zmm29, 832(%0)\n vmovdqu64 %%zmm30, 896(%0)\n" \
  "vmovdqu64 %%zmm31, 960(%0)\n"

/* Output without library code: glibc's EVEX string functions use ymm16-31. */
static void say(const char *what, int round) {
  char buf[64];
  int n = 0;
  const char *p = "round ";
  while (*p) buf[n++] = *p++;
  char digits[12];
  int nd = 0;
  do { digits[nd++] = (char)('0' + round % 10); round /= 10; } while (round);
  while (nd) buf[n++] = digits[--nd];
  buf[n++] = ' ';
  while (*what) buf[n++] = *what++;
  buf[n++] = '\n';
  long ret;
  __asm__ volatile("syscall" : "=a"(ret) : "0"(SYS_write), "D"(1), "S"(buf), "d"(n) : "rcx", "r11", "memory");
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 10;
  long interval_ms = argc > 2 ? atol(argv[2]) : 200;
  if (!has_avx512f()) { printf("no avx512f\n"); return 3; }
  static uint64_t pattern[8] __attribute__((aligned(64)));
  for (int i = 0; i < 8; i++) pattern[i] = 0x0123456789abcdefULL * (uint64_t)(i + 1);
  /* Fill zmm16..zmm31 with the pattern rotated by register number, k1..k7 with
   * distinct masks. Nothing else in this program touches those registers. */
  __asm__ volatile(
      "vmovdqu64 (%0), %%zmm16\n"
      "valignq $1, %%zmm16, %%zmm16, %%zmm17\n valignq $2, %%zmm16, %%zmm16, %%zmm18\n"
      "valignq $3, %%zmm16, %%zmm16, %%zmm19\n valignq $4, %%zmm16, %%zmm16, %%zmm20\n"
      "valignq $5, %%zmm16, %%zmm16, %%zmm21\n valignq $6, %%zmm16, %%zmm16, %%zmm22\n"
      "valignq $7, %%zmm16, %%zmm16, %%zmm23\n vpxorq %%zmm16, %%zmm17, %%zmm24\n"
      "vpxorq %%zmm17, %%zmm18, %%zmm25\n vpxorq %%zmm18, %%zmm19, %%zmm26\n"
      "vpxorq %%zmm19, %%zmm20, %%zmm27\n vpxorq %%zmm20, %%zmm21, %%zmm28\n"
      "vpxorq %%zmm21, %%zmm22, %%zmm29\n vpxorq %%zmm22, %%zmm23, %%zmm30\n"
      "vpaddq %%zmm16, %%zmm23, %%zmm31\n"
      "movl $0x11, %%eax\n kmovw %%eax, %%k1\n movl $0x22, %%eax\n kmovw %%eax, %%k2\n"
      "movl $0x44, %%eax\n kmovw %%eax, %%k3\n movl $0x88, %%eax\n kmovw %%eax, %%k4\n"
      "movl $0x35, %%eax\n kmovw %%eax, %%k5\n movl $0x5a, %%eax\n kmovw %%eax, %%k6\n"
      "movl $0xc3, %%eax\n kmovw %%eax, %%k7\n"
      :: "r"(pattern) : "eax", "memory");
  /* Reference values, computed the same way into memory. */
  static uint64_t ref[16][8] __attribute__((aligned(64)));
  static uint64_t now[16][8] __attribute__((aligned(64)));
  __asm__ volatile(
      STORE_ZMM16_31 :: "r"(ref) : "memory");
  for (int r = 1; r <= rounds; r++) {
    struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
    /* A raw syscall: no library code runs between the checks. */
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "0"(SYS_nanosleep), "D"(&ts), "S"(0) : "rcx", "r11", "memory");
    __asm__ volatile(
        STORE_ZMM16_31 :: "r"(now) : "memory");
    unsigned k[8];
    __asm__ volatile("kmovw %%k1, %0\n kmovw %%k2, %1\n kmovw %%k3, %2\n kmovw %%k4, %3\n"
                     "kmovw %%k5, %4\n kmovw %%k6, %5\n kmovw %%k7, %6\n"
                     : "=r"(k[1]), "=r"(k[2]), "=r"(k[3]), "=r"(k[4]), "=r"(k[5]), "=r"(k[6]), "=r"(k[7]));
    int ok = k[1] == 0x11 && k[2] == 0x22 && k[3] == 0x44 && k[4] == 0x88 && k[5] == 0x35 &&
             k[6] == 0x5a && k[7] == 0xc3;
    for (int i = 0; i < 16 && ok; i++)
      for (int j = 0; j < 8; j++) ok &= now[i][j] == ref[i][j];
    /* printf may use vector registers below zmm16 only; check before printing. */
    if (!ok) { say("MISMATCH", r); return 1; }
    say("ok", r);
  }
  say("all ok", rounds);
  return 0;
}
