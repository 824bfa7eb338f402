#!/usr/bin/env python3
"""A parent and its child, the parent holding fds on /proc files of both
(its own stat, opened as /proc/self/stat, and the child's status): every
INTERVAL_MS it rereads them through those fds and prints whether each
still describes that process (the pid in it is the one the process has).
Restored in a pid namespace, that needs the namespace's own /proc.
Usage: proc_fds.py TICKS INTERVAL_MS"""
import os
import signal
import sys
import time


def main():
    ticks, interval = int(sys.argv[1]), int(sys.argv[2]) / 1000
    child = os.fork()
    if child == 0:
        while True:
            time.sleep(1)
    own = os.open("/proc/self/stat", os.O_RDONLY)
    theirs = os.open(f"/proc/{child}/status", os.O_RDONLY)
    for i in range(1, ticks + 1):
        time.sleep(interval)
        me = os.pread(own, 4096, 0).split()[0] == str(os.getpid()).encode()
        kid = f"\nPid:\t{child}\n".encode() in os.pread(theirs, 4096, 0)
        print(f"tick {i} own stat {me} child status {kid}", flush=True)
    os.kill(child, signal.SIGTERM)
    os.waitpid(child, 0)
    print("done", flush=True)


main()
