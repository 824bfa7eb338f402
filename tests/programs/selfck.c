/* Asks for its own checkpoint in the middle of its run, as the seeds' users
 * do with dmtcp_command: prints 1..LIMIT, one per INTERVAL_MS, and after
 * line AT calls system("SNAP checkpoint --dir DIR --wait"), printing what the
 * call returned. Resumed from that checkpoint, it goes on right after the call.
 * Usage: selfck SNAP DIR LIMIT AT INTERVAL_MS */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
  if (argc != 6) return 2;
  long limit = atol(argv[3]), at = atol(argv[4]), interval_ms = atol(argv[5]);
  struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "%s checkpoint --dir %s --wait 2>/dev/null", argv[1], argv[2]);
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (long i = 1; i <= limit; i++) {
    printf("%ld\n", i);
    if (i == at) printf("checkpoint call returned %d\n", system(cmd));
    nanosleep(&ts, NULL);
  }
  printf("end\n");
  return 0;
}
