#!/usr/bin/env python3
"""A job that starts a daemon the classic way (fork, setsid, fork again, the
session's leader exits): the job's root is a child subreaper (as a
container's init or `systemd --user` is), so the daemon is given to it and
stays in the job, in a session and process group whose leader has exited.
The daemon forks a child of its own. Every INTERVAL_S the root asks the
daemon over a pipe; the daemon asks its child; the root prints one line per
tick with what each saw of itself: its session and group still the one the
exited leader made, its parent, and a count of the ticks it answered. The
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


def main():
    ticks, interval = int(sys.argv[1]), float(sys.argv[2])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
    req_r, req_w = os.pipe()
    ans_r, ans_w = os.pipe()
    leader = os.fork()
    if leader == 0:
        os.close(req_w)  # so that the daemon sees the root's end close
        os.close(ans_r)
        os.setsid()
        if os.fork() == 0:  # the daemon
            creq_r, creq_w = os.pipe()
            cans_r, cans_w = os.pipe()
            if os.fork() == 0:  # its child
                for fd in (req_r, ans_w, creq_w, cans_r):
                    os.close(fd)
                serve(creq_r, cans_w)
            os.close(creq_r)
            os.close(cans_w)
            serve(req_r, ans_w, below=(creq_w, cans_r))
        os._exit(0)
    os.close(req_r)
    os.close(ans_w)
    os.waitpid(leader, 0)  # the session's leader has exited and is reaped
    root = os.getpid()
    for t in range(1, ticks + 1):
        time.sleep(interval)
        os.write(req_w, b"?")
        print(f"tick {t}: {os.read(ans_r, 4096).decode()}", flush=True)
    os.close(req_w)
    for _ in range(2):
        try:
            os.wait()
        except ChildProcessError:
            break
    print(f"done, root {os.getpid() == root}", flush=True)


if __name__ == "__main__":
    main()
