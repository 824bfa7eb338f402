#!/usr/bin/env python3
"""A job that keeps a SQLite database in WAL mode (it maps the -shm file it
holds POSIX locks on, as Optuna, MLflow and many tools' SQLite storage do),
and holds a POSIX lock on a data file it maps. Each round adds a row and
prints the count; at the end a separate process reads the database through
its own connection (the WAL index in the mapped -shm file and the locks
must agree), and a child asks who holds the data file's lock.
Usage: sqlite_wal.py ROUNDS INTERVAL_MS DIR"""
import fcntl
import mmap
import os
import sqlite3
import struct
import subprocess
import sys
import time

rounds, interval, where = int(sys.argv[1]), int(sys.argv[2]) / 1000, sys.argv[3]
path = os.path.join(where, "job.db")
db = sqlite3.connect(path)
db.execute("pragma journal_mode=wal")
db.execute("create table t (i integer, v text)")
db.commit()

data = open(os.path.join(where, "locked.data"), "w+b")
data.write(b"x" * 4096)
data.flush()
fcntl.lockf(data, fcntl.LOCK_EX, 100, 0)  # bytes 0-99, POSIX
mapped = mmap.mmap(data.fileno(), 4096)

for i in range(1, rounds + 1):
    db.execute("insert into t values (?, ?)", (i, "x" * 100))
    db.commit()
    n, = db.execute("select count(*) from t").fetchone()
    print(f"round {i} rows {n}", flush=True)
    time.sleep(interval)

reader = subprocess.run(
    [sys.executable, "-c",
     "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
     "print(*c.execute('select count(*), sum(i) from t').fetchone())", path],
    capture_output=True, text=True)
print("another connection reads:", reader.stdout.strip() or reader.stderr.strip()[-200:])

parent = os.getpid()
child = os.fork()
if child == 0:
    probe = open(os.path.join(where, "locked.data"), "r+b")
    want = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 100, 0)
    got = fcntl.fcntl(probe, fcntl.F_GETLK, want)
    l_type, _, start, length, pid = struct.unpack("hhqqi", got)
    print("lock on the mapped file held by the job:", l_type == fcntl.F_WRLCK and pid == parent,
          start, length, flush=True)
    os._exit(0)
os.waitpid(child, 0)
mapped[0:4] = b"done"
print("mapped file written:", open(os.path.join(where, "locked.data"), "rb").read(4).decode())
db.close()
