#!/usr/bin/env python3
"""A TCP stream whose reader is busy, for snap's tests of connections saved
without repair mode: the forked child sends LINES numbered lines to its
parent over 127.0.0.1, one a millisecond, and closes; the parent, busy,
reads nothing until it has printed TICKS lines of its own, one every 100 ms,
then reads the whole stream and prints how much came and its sum. While the
child streams, what it sent last waits for an acknowledgement the parent's
kernel delays (up to 40 ms on loopback), though it is in the parent's
receive queue already. The output is the same on every run.
Usage: tcp_stream.py LINES TICKS"""
import os
import socket
import sys
import time


def main():
    lines, ticks = int(sys.argv[1]), int(sys.argv[2])
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        listener.close()
        out = socket.create_connection(("127.0.0.1", port))
        for i in range(1, lines + 1):
            out.sendall(f"{i}\n".encode())
            time.sleep(0.001)
        out.close()
        os._exit(0)
    conn, _ = listener.accept()
    listener.close()
    for i in range(1, ticks + 1):
        time.sleep(0.1)
        print(f"tick {i}", flush=True)
    data = b""
    while True:
        d = conn.recv(1 << 16)
        if not d:
            break
        data += d
    numbers = [int(x) for x in data.split()]
    print(f"received {len(numbers)} lines, sum {sum(numbers)}, in order {numbers == list(range(1, lines + 1))}",
          flush=True)
    _, status = os.waitpid(pid, 0)
    print(f"child exit {status}", flush=True)


main()
