#!/usr/bin/env python3
"""A parent, its child and its grandchild, the parent holding pidfds on
both (as asyncio's pidfd child watcher holds one per subprocess): every
INTERVAL_MS it polls them (a pidfd turns readable when its process ends)
and prints whether each still runs; at the end it ends the grandchild
through its pidfd (pidfd_send_signal) and sees it end, then the child.
Usage: pidfd_tree.py TICKS INTERVAL_MS"""
import os
import select
import signal
import sys
import time


def ended(pidfd, timeout=0.0):
    return bool(select.select([pidfd], [], [], timeout)[0])


def main():
    ticks, interval = int(sys.argv[1]), int(sys.argv[2]) / 1000
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        grandchild = os.fork()
        if grandchild == 0:
            while True:
                time.sleep(1)
        os.write(w, f"{grandchild}\n".encode())
        os.waitpid(grandchild, 0)  # ends after its child
        os._exit(0)
    grandchild = int(os.read(r, 64).decode())
    own_child, own_grandchild = os.pidfd_open(child), os.pidfd_open(grandchild)
    for i in range(1, ticks + 1):
        time.sleep(interval)
        print(f"tick {i} child runs {not ended(own_child)} grandchild runs "
              f"{not ended(own_grandchild)}", flush=True)
    signal.pidfd_send_signal(own_grandchild, signal.SIGTERM)
    print(f"grandchild ended {ended(own_grandchild, 10)}", flush=True)
    print(f"child ended {ended(own_child, 10)}", flush=True)
    os.waitpid(child, 0)


main()
