#!/usr/bin/env python3
"""A job that keeps a session directory in its temporary directory, as MPI
launchers and many libraries do, for snap's restore on another node (or
after a site's cleanup): under $TMPDIR (or /tmp) it makes
snap-session.PID/ (mode 700) holding a 16 KiB file it keeps open and
rereads (topo.sm), a FIFO it keeps open and echoes through (0/attach_fifo,
in a directory it then makes read-only, mode 550), a 1 MiB file it maps MAP_SHARED and writes
(ds/seg) and a unix socket it listens on and connects to (ds/sock). Every
INTERVAL_MS it changes the mapping and prints a line of checksums of all
of them; at the end it removes the directory. The output is the same on
every run.
Usage: tmp_session.py TICKS INTERVAL_MS"""
import mmap
import os
import shutil
import socket
import sys
import time
import zlib


def main():
    ticks, interval = int(sys.argv[1]), int(sys.argv[2]) / 1000
    base = os.environ.get("TMPDIR") or "/tmp"
    session = os.path.join(base, f"snap-session.{os.getpid()}")
    os.mkdir(session, 0o700)
    os.makedirs(os.path.join(session, "0"), 0o750)
    os.mkdir(os.path.join(session, "ds"), 0o700)

    topo = os.open(os.path.join(session, "topo.sm"), os.O_RDWR | os.O_CREAT, 0o600)
    os.write(topo, bytes(i * 7 % 251 for i in range(16384)))
    fifo_path = os.path.join(session, "0", "attach_fifo")
    os.mkfifo(fifo_path, 0o644)
    fifo = os.open(fifo_path, os.O_RDWR | os.O_NONBLOCK)
    os.chmod(os.path.join(session, "0"), 0o550)
    seg_fd = os.open(os.path.join(session, "ds", "seg"), os.O_RDWR | os.O_CREAT, 0o640)
    os.ftruncate(seg_fd, 1 << 20)
    seg = mmap.mmap(seg_fd, 1 << 20, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(seg_fd)  # held by the mapping only
    sock_path = os.path.join(session, "ds", "sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(1)

    for i in range(1, ticks + 1):
        time.sleep(interval)
        seg[(i * 4099) % (1 << 20)] = i % 256
        seg[(i * 65537) % (1 << 20)] = (i * 3) % 256
        os.write(fifo, f"ping {i}".encode())
        echo = os.read(fifo, 64).decode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(sock_path)
            conn, _ = listener.accept()
            c.sendall(f"hello {i}".encode())
            heard = conn.recv(64).decode()
            conn.close()
        print(f"tick {i} seg {zlib.crc32(seg):08x} topo {zlib.crc32(os.pread(topo, 16384, 0)):08x} "
              f"fifo {echo} sock {heard}", flush=True)
    os.chmod(os.path.join(session, "0"), 0o750)
    shutil.rmtree(session)
    print("done", flush=True)


main()
