#!/usr/bin/env python3
"""selfck.c in Python: after line AT, os.system('SNAP checkpoint --dir DIR --wait').
Usage: selfck.py SNAP DIR LIMIT AT INTERVAL_MS"""
import os
import sys
import time

snap, ckpt, limit, at, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
squares = {i: i * i for i in range(10000)}  # state in the heap
for i in range(1, limit + 1):
    assert squares[i] == i * i
    print(i, flush=True)
    if i == at:
        rc = os.system(f"{snap} checkpoint --dir {ckpt} --wait 2>/dev/null")
        print("checkpoint call returned", rc, flush=True)
    time.sleep(interval / 1000)
print("end", flush=True)
