#!/usr/bin/env python3
"""A multiprocessing.Manager job: the manager's server process listens on a
unix socket in a directory Python makes under $TMPDIR (pymp-XXXXXX) and
removes at the end; for each of COUNT items the parent starts a process
that stores its square in a shared dict through that socket, waits for it
and prints the item, its square and the sum so far, then sleeps
INTERVAL_MS. The output is the same on every run.
Usage: manager_job.py COUNT INTERVAL_MS"""
import multiprocessing
import sys
import time


def work(d, i):
    d[i] = i * i


if __name__ == "__main__":
    count, interval = int(sys.argv[1]), int(sys.argv[2]) / 1000
    with multiprocessing.Manager() as manager:
        d = manager.dict()
        for i in range(1, count + 1):
            p = multiprocessing.Process(target=work, args=(d, i))
            p.start()
            p.join()
            print(i, d[i], sum(d.values()), flush=True)
            time.sleep(interval)
    print("manager done", flush=True)
