#!/usr/bin/env python3
"""A job that keeps its history in files it closes between steps, as Quantum
ESPRESSO's molecular dynamics reads back its outdir's .md file at every
step: each step reads DIR/state (the step it was written at and a number
x) and DIR/frames/big.bin (2 MiB derived from x, more than a checkpoint's
JSON holds), checks both belong to the step before, advances x by a
chaotic map, writes both back (to a new file renamed over the old, as
careful programs do) and prints "step N x". Restored to a checkpoint, it
must find the files as they were then: files of a later step make it print
"stale" lines and other numbers. DIR/input.bin, 2 MiB written once at
the start (input the job reads at every step, not writing it again), must
stay as it was: else the step says "input changed". The output is the same
on every run.
Usage: history_file.py STEPS INTERVAL_MS DIR"""
import hashlib
import os
import sys
import time


def frame(x):
    seed = hashlib.sha256(repr(x).encode()).digest()
    return seed * (2 * 1024 * 1024 // len(seed))


def write(path, data):
    with open(path + ".new", "wb") as f:
        f.write(data)
    os.replace(path + ".new", path)


def main():
    steps, interval, d = int(sys.argv[1]), int(sys.argv[2]) / 1000, sys.argv[3]
    os.makedirs(os.path.join(d, "frames"), exist_ok=True)
    write(os.path.join(d, "state"), b"0 0.1234")
    write(os.path.join(d, "frames", "big.bin"), frame(0.1234))
    write(os.path.join(d, "input.bin"), frame(0.5))
    digest = hashlib.sha256(frame(0.5)).digest()
    for step in range(1, steps + 1):
        with open(os.path.join(d, "state"), "rb") as f:
            was, x = f.read().split()
        was, x = int(was), float(x)
        with open(os.path.join(d, "frames", "big.bin"), "rb") as f:
            big = f.read()
        if was != step - 1 or big != frame(x):
            print(f"stale: step {step} found the files of step {was}", flush=True)
        with open(os.path.join(d, "input.bin"), "rb") as f:
            if hashlib.sha256(f.read()).digest() != digest:
                print(f"input changed: step {step}", flush=True)
        x = 3.9 * x * (1 - x)
        write(os.path.join(d, "state"), f"{step} {x!r}".encode())
        write(os.path.join(d, "frames", "big.bin"), frame(x))
        print(f"step {step} {x!r}", flush=True)
        time.sleep(interval)


main()
