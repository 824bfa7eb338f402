"""A file a job maps privately and holds no fd on, deleted while the job
runs: what a library replaced under a running program looks like (pip
upgrading a package, a module or conda environment updated). At the start:
DIR/data, 64 pages and 100 bytes of a seeded pattern, mapped privately
(read and write) with mmap(2) through ctypes, its fd closed, then
unlinked. Each round writes into one more page (copied on write: the
job's own from then on) and prints the round and a digest of the whole
mapping: pages it never wrote still come from the deleted file.
Usage: deleted_map.py DIR ROUNDS INTERVAL_S"""
import ctypes
import hashlib
import mmap
import os
import random
import sys
import time

PAGE = 4096


def main():
    d, rounds, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    size = 64 * PAGE + 100
    path = os.path.join(d, "data")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, random.Random(5).randbytes(size))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    length = 65 * PAGE
    addr = libc.mmap(None, length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE, fd, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        sys.exit(f"mmap: {os.strerror(ctypes.get_errno())}")
    os.close(fd)
    os.unlink(path)
    view = (ctypes.c_char * length).from_address(addr)
    for i in range(1, rounds + 1):
        view[(i * 7 % 64) * PAGE + i] = bytes([i])
        print(i, hashlib.sha256(view.raw).hexdigest()[:16], flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    main()
