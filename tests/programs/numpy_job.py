#!/usr/bin/env python3
"""A NumPy job of the kind HPC users run: matrix products through the
system's BLAS (OpenBLAS with its own worker threads where installed, as
scripts/setup does), each step A = (A @ M) mod 1009 on N x N integer-valued
doubles, exact in any summation order, so every run prints the same digest
of A after each step, whatever the BLAS's threads.
Usage: numpy_job.py N STEPS INTERVAL_MS   (prints "threads T" first, "done" last)"""
import hashlib
import os
import sys
import time

import numpy as np


def main():
    n, steps, interval = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1000
    rng = np.random.default_rng(7)
    a = rng.integers(0, 1009, (n, n)).astype(np.float64)
    m = rng.integers(0, 1009, (n, n)).astype(np.float64)
    a @ m  # the BLAS starts its threads on its first product
    print(f"threads {len(os.listdir('/proc/self/task'))}", flush=True)
    for k in range(1, steps + 1):
        a = np.mod(a @ m, 1009.0)
        print(f"step {k} {hashlib.sha256(a.tobytes()).hexdigest()[:16]}", flush=True)
        time.sleep(interval)
    print("done", flush=True)


main()
