#!/usr/bin/env python3
"""A job with a scratch file in its $TMPDIR larger than the checkpoint's JSON
keeps of such files (tracer/temp_files.h): it writes SIZE_MIB MiB of a
fixed pattern to $TMPDIR/scratch/data.bin, keeps it open, and then prints
TICKS lines, one every INTERVAL_MS, each the sum of a 64 KiB slice of the
file read through that descriptor at an offset of its own. With "scribble"
it then overwrites the file's first MiB with other bytes. The output is the
same on every run; a restore must give it the file as it was.
Usage: scratch_file.py SIZE_MIB TICKS INTERVAL_MS [scribble]"""
import os
import sys
import time


def main():
    size_mib, ticks, interval = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1000
    d = os.path.join(os.environ.get("TMPDIR", "/tmp"), "scratch")
    os.makedirs(d, exist_ok=True)
    f = open(os.path.join(d, "data.bin"), "w+b")
    block = bytes((i * 7 + 3) % 251 for i in range(1 << 20))
    for i in range(size_mib):
        f.write(block[i:] + block[:i])
    f.flush()
    span = size_mib << 20
    for t in range(1, ticks + 1):
        time.sleep(interval)
        off = (t * 987654) % (span - 65536)
        f.seek(off)
        print(f"tick {t} sum {sum(f.read(65536))}", flush=True)
    if sys.argv[4:] == ["scribble"]:
        f.seek(0)
        f.write(bytes(range(256)) * 4096)
        f.flush()
    f.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
