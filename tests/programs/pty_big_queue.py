#!/usr/bin/env python3
"""A pty with more written to its master than a restore can put back
(10000 bytes; the slave, in raw mode, does not read yet). After a pause it
reads them all and says whether they are intact: a refused dump must leave
them so. Usage: pty_big_queue.py PAUSE_MS"""
import os
import pty
import sys
import time
import tty

pause = int(sys.argv[1]) / 1000
m, s = pty.openpty()
tty.setraw(s)
os.set_blocking(m, False)
data = bytes((i * 7) % 251 for i in range(10000))
n = os.write(m, data)
print("wrote", n, flush=True)
time.sleep(pause)
os.set_blocking(s, False)
got = b""
deadline = time.monotonic() + 5
while len(got) < n and time.monotonic() < deadline:
    try:
        got += os.read(s, 65536)
    except BlockingIOError:
        time.sleep(0.02)
print("read", len(got), "intact", got == data[:n], flush=True)
