#!/usr/bin/env python3
"""A job that writes a data file of its working directory through a shared
mapping, keeps it mapped for a while, writes to the same page again (no
page fault: the kernel leaves the file's times as they were), then unmaps
and closes it; each step prints the file's first bytes as read with
pread. Restored to a checkpoint taken after the unmap, it must find what it
wrote last: a checkpoint that took the file for unchanged by its times would
bring back the first contents. The output is the same on every run.
Usage: mapped_then_closed.py STEPS INTERVAL_MS DIR (the second write at
step STEPS // 2, the unmap at the step after, said by "unmapped")"""
import mmap
import os
import sys
import time

steps, interval, d = int(sys.argv[1]), int(sys.argv[2]) / 1000, sys.argv[3]
os.makedirs(d, exist_ok=True)
path = os.path.join(d, "data.bin")
with open(path, "wb") as f:
    f.write(b"\0" * 4 * mmap.PAGESIZE)
fd = os.open(path, os.O_RDWR)
m = mmap.mmap(fd, 4 * mmap.PAGESIZE)
m[0:24] = b"written first, mapped   "
for step in range(1, steps + 1):
    if step == steps // 2:
        m[0:24] = b"written again, no fault "
    if m is not None and step == steps // 2 + 1:
        m.close()
        os.close(fd)
        m = None
        print("unmapped", flush=True)
    with open(path, "rb") as f:
        print(step, f.read(24).decode().strip(), flush=True)
    time.sleep(interval)
