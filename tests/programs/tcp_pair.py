#!/usr/bin/env python3
"""TCP connections inside one process tree, for snap's repair-mode tests:
a parent (server, on 127.0.0.1 and ::1) and its forked child (client)
exchange numbered messages. The parent keeps PINGS_AHEAD pings queued
unread at the child, the child sends ticks the parent reads only at the
end, and the parent pushes a 3 MiB blob over IPv6 that the child reads only
at the end (so send and receive queues are full at any checkpoint). A
third connection is half-closed by the child at once (its greeting and a
FIN wait unread at the parent, which answers at the end). Prints
one line per round, then what came through at the end, and whether the
parent's two connections still send segments as large as they had at the
start (TCP_MAXSEG, up to 32 KiB); the same on every run.
With BLOB_BYTES, the blob is that long instead (a short one is all in the
child's receive queue at a checkpoint: nothing in flight).
Usage: tcp_pair.py ROUNDS INTERVAL_MS [BLOB_BYTES]"""
import hashlib
import os
import socket
import sys
import time

PINGS_AHEAD = 3
BLOB = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(100000))


def read_to_eof(sock):
    """Everything the peer sends until it shuts its side."""
    out = b""
    while True:
        d = sock.recv(4096)
        if not d:
            return out
        out += d


def child(rounds, interval, port4, port6, blob):
    c4 = socket.create_connection(("127.0.0.1", port4))
    c6 = socket.create_connection(("::1", port6))
    half = socket.create_connection(("127.0.0.1", port4))
    half.sendall(b"hello from a half-closed connection\n")
    half.shutdown(socket.SHUT_WR)
    f4 = c4.makefile("rb")
    for i in range(1, rounds + 1):
        time.sleep(interval)
        ping = f4.readline().decode().strip()
        c6.sendall(f"tick {i}\n".encode())
        c4.sendall(f"pong {i} to {ping}\n".encode())
    digest, n = hashlib.sha256(), 0
    while n < len(blob):
        d = c6.recv(1 << 16)
        if not d:
            break
        digest.update(d)
        n += len(d)
    reply = read_to_eof(half)
    c4.sendall(f"blob {n} bytes {digest.hexdigest()[:16]}, answer {reply!r}\n".encode())
    c6.close()
    c4.close()
    os._exit(0)


def main():
    rounds, interval = int(sys.argv[1]), int(sys.argv[2]) / 1000
    blob = BLOB[:int(sys.argv[3])] if len(sys.argv) > 3 else BLOB
    srv4 = socket.create_server(("127.0.0.1", 0))
    srv6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
    pid = os.fork()
    if pid == 0:
        child(rounds, interval, srv4.getsockname()[1], srv6.getsockname()[1], blob)
    a4, _ = srv4.accept()
    a6, _ = srv6.accept()
    half, _ = srv4.accept()
    mss = [s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) for s in (a4, a6)]
    r4 = a4.makefile("rb")
    for i in range(1, min(PINGS_AHEAD, rounds) + 1):
        a4.sendall(f"ping {i}\n".encode())
    a6.setblocking(False)
    sent = 0
    for i in range(1, rounds + 1):
        try:
            sent += a6.send(blob[sent:])  # what fits now
        except BlockingIOError:
            pass
        line = r4.readline().decode().strip()
        print(f"round {i}: {line}", flush=True)
        if i + PINGS_AHEAD <= rounds:
            a4.sendall(f"ping {i + PINGS_AHEAD}\n".encode())
    a6.setblocking(True)
    a6.sendall(blob[sent:])
    greeting = read_to_eof(half)
    print(f"half-closed: {greeting!r}", flush=True)
    half.sendall(b"answer to a half-closed connection\n")
    half.close()
    print(r4.readline().decode().strip(), flush=True)
    a6.shutdown(socket.SHUT_WR)
    ticks = read_to_eof(a6)
    want = "".join(f"tick {i}\n" for i in range(1, rounds + 1))
    print(f"ticks in order: {ticks.decode() == want}", flush=True)
    # A restore can give a connection segments of 32767 bytes at most (the
    # kernel's limit for TCP_MAXSEG): loopback's 65483 come back halved.
    now = [s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) for s in (a4, a6)]
    kept = all(n >= min(m, 32767 - 40) for n, m in zip(now, mss))
    print(f"segments as large as at the start (up to 32 KiB): {kept}", flush=True)
    _, status = os.waitpid(pid, 0)
    print(f"child exit {status}", flush=True)


main()
