#!/usr/bin/env python3
"""A job with a large unlinked scratch file it writes once and then only
reads (a Fortran STATUS='SCRATCH' table, a TemporaryFile of results kept
for later): it writes SIZE_MIB MiB of seeded random bytes to DIR/scratch,
unlinks it (with "keep": leaves it there, a scratch file in $TMPDIR), then
prints TICKS lines, one every INTERVAL_S, each with a
digest of a MiB of the file at an offset of its own; at tick REWRITE it
overwrites the file's first 4 MiB with other bytes (so a copy read after
that differs). The output is the same on every run.
Usage: quiet_scratch.py DIR SIZE_MIB TICKS INTERVAL_S REWRITE [keep]"""
import hashlib
import os
import random
import sys
import time

MIB = 1 << 20


def main():
    d, size_mib, ticks, interval, rewrite = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                             float(sys.argv[4]), int(sys.argv[5]))
    rng = random.Random(11)
    path = os.path.join(d, "scratch")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    if sys.argv[6:] != ["keep"]:
        os.unlink(path)
    for i in range(size_mib):
        os.pwrite(fd, rng.randbytes(MIB), i * MIB)
    for t in range(1, ticks + 1):
        time.sleep(interval)
        if t == rewrite:
            os.pwrite(fd, rng.randbytes(4 * MIB), 0)
        off = (t * 5 % size_mib) * MIB
        print(f"tick {t} {hashlib.sha256(os.pread(fd, MIB, off)).hexdigest()[:16]}", flush=True)


if __name__ == "__main__":
    main()
