"""A multiprocessing.Pool(2) job (fork start method: a parent with its pool
threads, two worker processes, pipes and a semaphore between them): imap
over COUNT items, each worker sleeping INTERVAL_MS per item; the parent
prints each result as it comes, in order, so the output is deterministic.
Usage: pool_job.py COUNT INTERVAL_MS"""
import hashlib
import multiprocessing
import sys
import time


def work(n):
    time.sleep(DELAY)
    return n, hashlib.sha256(f"item {n}".encode()).hexdigest()


DELAY = 0.1

if __name__ == "__main__":
    count = int(sys.argv[1])
    DELAY = int(sys.argv[2]) / 1000
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        for n, h in pool.imap(work, range(1, count + 1)):
            print(n, h, flush=True)
    print("pool done", flush=True)
