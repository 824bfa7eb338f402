#!/usr/bin/env python3
"""A job with a scratch file in its $TMPDIR larger than the checkpoint's JSON
keeps of such files (tracer/temp_files.h): it writes SIZE_MIB MiB of a
fixed pattern to $TMPDIR/scratch/data.bin, keeps it open, and then prints
TICKS lines, one every INTERVAL_MS, each the sum of a 64 KiB slice of the
file read through that descriptor at an offset of its own. With "map" it
maps the file copy-on-write instead, closes it and reads the slices from the
mapping (a data file or library a job maps from /tmp). With "scribble" it
then overwrites the file's first MiB with other bytes. The output is the
same on every run; a restore must give it the file as it was.
Usage: scratch_file.py SIZE_MIB TICKS INTERVAL_MS [map] [scribble]"""
import ctypes
import mmap
import os
import sys
import time


def main():
    size_mib, ticks, interval = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1000
    words = sys.argv[4:]
    d = os.path.join(os.environ.get("TMPDIR", "/tmp"), "scratch")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "data.bin")
    f = open(path, "w+b")
    block = bytes((i * 7 + 3) % 251 for i in range(1 << 20))
    for i in range(size_mib):
        f.write(block[i:] + block[:i])
    f.flush()
    span = size_mib << 20
    if "map" in words:
        # mmap(2) itself: Python's mmap module would keep a dup of the fd.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        addr = libc.mmap(None, span, mmap.PROT_READ, mmap.MAP_PRIVATE, f.fileno(), 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            sys.exit(f"mmap: {os.strerror(ctypes.get_errno())}")
        f.close()
        read = lambda off: ctypes.string_at(addr + off, 65536)
    else:
        def read(off):
            f.seek(off)
            return f.read(65536)
    for t in range(1, ticks + 1):
        time.sleep(interval)
        off = (t * 987654) % (span - 65536)
        print(f"tick {t} sum {sum(read(off))}", flush=True)
    if "scribble" in words:
        with open(path, "r+b") as g:
            g.write(bytes(range(256)) * 4096)
    if "map" not in words:
        f.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
