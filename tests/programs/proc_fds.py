#!/usr/bin/env python3
"""A parent and its child, the parent holding fds on /proc files of both
(its own stat, opened as /proc/self/stat before the fork, so that the
child holds it too; the child's status; the stat of a second thread of
the child's, as /proc/CHILD/task/TID/stat) and of a second thread of its
own (its status, opened as /proc/thread-self/status by that thread, which
the kernel resolves to /proc/PID/task/TID/status, and its stat as
/proc/TID/stat, whose offset stays past the tid): every
INTERVAL_MS it rereads them through those fds and prints whether each
still describes that process or thread (the pid or tid in it is the one
it has). Restored in a pid namespace, that needs the namespace's own /proc.
Usage: proc_fds.py TICKS INTERVAL_MS"""
import os
import signal
import sys
import threading
import time


def main():
    ticks, interval = int(sys.argv[1]), int(sys.argv[2]) / 1000
    own = os.open("/proc/self/stat", os.O_RDONLY)  # the child holds it too
    tell, told = os.pipe()
    child = os.fork()
    if child == 0:
        def sleeper():
            os.write(told, f"{threading.get_native_id()}\n".encode())
            while True:
                time.sleep(1)

        threading.Thread(target=sleeper, daemon=True).start()
        while True:
            time.sleep(1)
    theirs = os.open(f"/proc/{child}/status", os.O_RDONLY)
    ctid = int(os.read(tell, 64))
    their_thread = os.open(f"/proc/{child}/task/{ctid}/stat", os.O_RDONLY)
    opened, held = threading.Event(), {}

    def worker():
        held["tid"] = threading.get_native_id()
        held["status"] = os.open("/proc/thread-self/status", os.O_RDONLY)
        opened.set()
        while True:
            time.sleep(1)

    threading.Thread(target=worker, daemon=True).start()
    opened.wait()
    tid = held["tid"]
    stat = os.open(f"/proc/{tid}/stat", os.O_RDONLY)
    os.lseek(stat, len(str(tid)), os.SEEK_SET)  # the offset the dump must keep
    for i in range(1, ticks + 1):
        time.sleep(interval)
        me = os.pread(own, 4096, 0).split()[0] == str(os.getpid()).encode()
        kid = f"\nPid:\t{child}\n".encode() in os.pread(theirs, 4096, 0)
        thread = f"\nPid:\t{tid}\n".encode() in os.pread(held["status"], 4096, 0)
        tstat = (os.lseek(stat, 0, os.SEEK_CUR) == len(str(tid)) and
                 os.pread(stat, 4096, 0).startswith(f"{tid} (".encode()))
        kid_thread = os.pread(their_thread, 4096, 0).startswith(f"{ctid} (".encode())
        print(f"tick {i} own stat {me} child status {kid} child thread stat {kid_thread} "
              f"thread status {thread} thread stat {tstat}", flush=True)
    os.kill(child, signal.SIGTERM)
    os.waitpid(child, 0)
    print("done", flush=True)


main()
