#!/usr/bin/env python3
"""A TCP connection inside one process tree whose receiving end holds far
more unread data than the receive buffer it set afterwards (SO_RCVBUF set
small once megabytes had queued), the case that left a restored job hung:
a parent (server) and its forked child (client) on 127.0.0.1. The child
fills the connection towards the parent, which reads it for half a second
(the kernel grows its receive buffer) and then no more until the end; the
parent then shrinks its receive buffer and prints "ready" (a
checkpoint is taken here), waits 2 s, and lets the child go on: the child
sends more for a moment, then reads a 1 MiB blob the parent sends it on the
same connection (whose acknowledgements must reach the parent) and reports
its digest; last the parent reads everything the child sent. The output is
the same on every run.
Usage: tcp_rcvbuf_shrunk.py"""
import hashlib
import os
import socket
import time

BLOB = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(1 << 15))  # 1 MiB


def send_for(sock, seconds):
    """Sends what the connection takes for `seconds`; returns the count."""
    sock.setblocking(False)
    sent, chunk, end = 0, b"y" * 65536, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            time.sleep(0.005)
    sock.setblocking(True)
    return sent


def child(port, go_r, report_w):
    d = socket.create_connection(("127.0.0.1", port))
    sent = send_for(d, 1.0)
    os.write(report_w, b"filled\n")
    os.read(go_r, 1)
    sent += send_for(d, 0.3)
    got = b""
    while len(got) < len(BLOB):
        data = d.recv(1 << 16)
        if not data:
            break
        got += data
    d.shutdown(socket.SHUT_WR)
    os.write(report_w, f"{len(got)} {hashlib.sha256(got).hexdigest()[:16]} {sent}\n".encode())
    os._exit(0)


def main():
    srv = socket.create_server(("127.0.0.1", 0))
    go_r, go_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        child(srv.getsockname()[1], go_r, report_w)
    d, _ = srv.accept()
    # Read for a while (so the kernel grows the receive buffer), then no
    # more: megabytes queue up.
    total, end = 0, time.monotonic() + 0.5
    d.settimeout(0.1)
    while time.monotonic() < end:
        try:
            total += len(d.recv(1 << 16))
        except socket.timeout:
            pass
    d.settimeout(None)
    report = os.fdopen(report_r)
    assert report.readline() == "filled\n"
    d.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    print("ready", flush=True)
    time.sleep(2)
    os.write(go_w, b"g")
    d.sendall(BLOB)
    n, digest, sent = report.readline().split()
    want = hashlib.sha256(BLOB).hexdigest()[:16]
    print(f"child got {n} bytes, digest as sent: {digest == want}", flush=True)
    while True:
        data = d.recv(1 << 16)
        if not data:
            break
        total += len(data)
    print(f"all the child sent arrived: {total == int(sent)}", flush=True)
    _, status = os.waitpid(pid, 0)
    print(f"child exit {status}", flush=True)


main()
