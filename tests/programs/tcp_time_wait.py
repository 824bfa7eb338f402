#!/usr/bin/env python3
"""A TCP server that closed a connection just before a checkpoint, for
snap's restore of ports held by TIME_WAIT: the parent listens on 127.0.0.1
without SO_REUSEADDR (as many servers do), its forked child connects twice;
the parent closes the first connection at once (so that connection's port,
the listener's, stays in TIME_WAIT for a minute, and no socket may bind it
meanwhile) and then sends TICKS numbered lines over the second one at
once; the child reads and prints one every INTERVAL_MS (the rest wait
unread in its receive queue). The listener stays open. The output is the
same on every run.
Usage: tcp_time_wait.py TICKS INTERVAL_MS"""
import os
import socket
import sys
import time


def child(port, ticks, interval):
    first = socket.create_connection(("127.0.0.1", port))
    second = socket.create_connection(("127.0.0.1", port))
    while first.recv(4096):  # the server closes it first: its end waits in TIME_WAIT
        pass
    first.close()
    lines = second.makefile("rb")
    for _ in range(ticks):
        time.sleep(interval)
        print(f"got {lines.readline().decode().strip()}", flush=True)
    os._exit(0)


def main():
    ticks, interval = int(sys.argv[1]), int(sys.argv[2]) / 1000
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        listener.close()
        child(port, ticks, interval)
    first, _ = listener.accept()
    second, _ = listener.accept()
    first.close()
    second.sendall("".join(f"tick {i}\n" for i in range(1, ticks + 1)).encode())
    _, status = os.waitpid(pid, 0)
    print(f"child exit {status}", flush=True)


main()
