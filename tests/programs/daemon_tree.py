#!/usr/bin/env python3
"""A job whose root is a child subreaper (as a container's init or `systemd
--user` is) and that starts two sessions:
  - a daemon, the classic way: fork, setsid, fork again, and the session's
    leader exits; the daemon is given to the root and stays in the job, in
    a session and process group whose leader has exited; it forks a child;
  - a session whose leader lives (`setsid sh -c '(cmd &)'`): the leader's
    child forks a worker and ends, so the worker is given to the root, in
    the leader's session and group.
Every INTERVAL_S the root asks each over a pipe (the daemon asks its child
in turn) and prints one line per tick with what each saw of itself: its
session and group still the ones it started in, whether that session's
first process is still there, and a count of the ticks it answered. The
output is the same on every run.
Usage: daemon_tree.py TICKS INTERVAL_S"""
import ctypes
import os
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def serve(requests, answers, below=None):
    """Answers each request byte with this process's view (and, with
    `below`, that of the process it asks in turn), until end of file."""
    sid, n = os.getsid(0), 0
    while os.read(requests, 1):
        n += 1
        view = (f"sid-kept={os.getsid(0) == sid} group-is-session={os.getpgrp() == sid} "
                f"leader-gone={not os.path.exists(f'/proc/{sid}')} n={n}")
        if below:
            os.write(below[0], b"?")
            view += " | " + os.read(below[1], 4096).decode()
        os.write(answers, view.encode())
    os._exit(0)


def channel():
    """Two pipes: (request read, request write, answer read, answer write)."""
    return (*os.pipe(), *os.pipe())


def close_all(fds):
    for fd in fds:
        os.close(fd)


def main():
    ticks, interval = int(sys.argv[1]), float(sys.argv[2])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
    daemon, leader, worker = channel(), channel(), channel()
    ends = lambda *cs: [fd for c in cs for fd in c]

    first = os.fork()
    if first == 0:  # forks the daemon and exits
        close_all(ends(leader, worker) + [daemon[1], daemon[2]])
        os.setsid()
        if os.fork() == 0:
            below = channel()
            if os.fork() == 0:  # the daemon's child
                close_all([daemon[0], daemon[3], below[1], below[2]])
                serve(below[0], below[3])
            close_all([below[0], below[3]])
            serve(daemon[0], daemon[3], below=(below[1], below[2]))
        os._exit(0)
    os.waitpid(first, 0)  # the daemon's session has lost its leader

    lead = os.fork()
    if lead == 0:  # leads a session; its child forks the worker and ends
        close_all(ends(daemon) + [leader[1], leader[2], worker[1], worker[2]])
        os.setsid()
        middle = os.fork()
        if middle == 0:
            close_all([leader[0], leader[3]])
            if os.fork() == 0:
                serve(worker[0], worker[3])
            os._exit(0)
        close_all([worker[0], worker[3]])
        os.waitpid(middle, 0)
        serve(leader[0], leader[3])
    close_all([daemon[0], daemon[3], leader[0], leader[3], worker[0], worker[3]])

    for t in range(1, ticks + 1):
        time.sleep(interval)
        views = []
        for c in (daemon, leader, worker):
            os.write(c[1], b"?")
            views.append(os.read(c[2], 4096).decode())
        print(f"tick {t}: " + " || ".join(views), flush=True)
    for c in (daemon, leader, worker):
        os.close(c[1])
    for _ in range(4):
        try:
            os.wait()
        except ChildProcessError:
            break
    print("done", flush=True)


if __name__ == "__main__":
    main()
