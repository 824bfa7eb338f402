#!/usr/bin/env python3
"""Runs an end-to-end test script as an ordinary user (uid/gid 65534, no
groups, no capabilities), as most HPC users are: `as_nobody.py SCRIPT ARGS...`.
Skipped (exit 77, with the reason) when not root or without setpriv: only
root can become another user to run the test."""
import os
import shutil
import sys

if os.geteuid() != 0:
    print("SKIP: becoming uid 65534 to test as an ordinary user needs root")
    sys.exit(77)
setpriv = shutil.which("setpriv")
if not setpriv:
    print("SKIP: setpriv is not installed (util-linux)")
    sys.exit(77)
env = dict(os.environ, SNAP_TEST_UNPRIVILEGED="1", HOME="/tmp")
# The system's python: an interpreter under root's home (pyenv) is not
# reachable for other users, and the tests run jobs with sys.executable.
python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
os.execve(setpriv, [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                    "--inh-caps=-all", "--bounding-set=-all", python, *sys.argv[1:]], env)
