"""Deleted files and a memfd too large for the checkpoint's JSON, which a
job keeps using. At the start: a memfd of 72 MiB (40 MiB of random bytes,
a 32 MiB hole, a last page), its first MiB mapped shared; a temporary file
of 12 MiB (Python's TemporaryFile: unlinked at once) in DIR; a scratch file
of 3 MiB in DIR, opened twice, then unlinked.
Each round writes into all three at places a seeded generator picks (the
memfd through its mapping and through the fd, the others through their
fds), then prints the round, a digest of each file's whole contents, their
sizes and how /proc names them. A restored run prints the same only if the
three came back with their contents as at the dump.
Usage: big_ghosts.py DIR ROUNDS INTERVAL_S"""
import hashlib
import mmap
import os
import random
import sys
import tempfile
import time

MIB = 1 << 20


def digest(fd, size):
    h = hashlib.sha256()
    for off in range(0, size, 8 * MIB):
        h.update(os.pread(fd, min(8 * MIB, size - off), off))
    return h.hexdigest()[:16]


def name(fd):
    return os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1]


def main():
    d, rounds, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rng = random.Random(7)
    mfd = os.memfd_create("snap-big")
    os.pwrite(mfd, rng.randbytes(40 * MIB), 0)
    os.pwrite(mfd, b"tail", 72 * MIB - 4)
    shared = mmap.mmap(mfd, MIB)

    tmp = tempfile.TemporaryFile(dir=d)
    tmp.write(bytes(range(256)) * (48 << 10))  # 12 MiB
    tmp.flush()

    path = os.path.join(d, "scratch")
    scratch = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
    os.pwrite(scratch, rng.randbytes(3 * MIB), 0)
    again = os.open(f"/proc/self/fd/{scratch}", os.O_RDONLY)
    os.unlink(path)

    for i in range(1, rounds + 1):
        word = i.to_bytes(8, "little")
        at = rng.randrange(MIB - 8)
        shared[at:at + 8] = word
        os.pwrite(mfd, word, rng.randrange(72 * MIB - 8))
        tmp.seek(rng.randrange(12 * MIB - 8))
        tmp.write(word)
        tmp.flush()
        os.pwrite(scratch, word, rng.randrange(3 * MIB - 8))
        sizes = [os.fstat(f).st_size for f in (mfd, tmp.fileno(), scratch)]
        print(i, digest(mfd, sizes[0]), digest(tmp.fileno(), sizes[1]), digest(again, sizes[2]),
              sizes, name(mfd), name(tmp.fileno()).endswith("(deleted)"), name(again),
              flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    main()
