#!/usr/bin/env python3
"""The counter from the checkpointing course, in Python: prints 1, 2, 3, ...
Usage: counter.py [LIMIT [INTERVAL_MS]] -- stops after LIMIT (default: never)."""
import itertools
import sys
import time

limit = int(sys.argv[1]) if len(sys.argv) > 1 else 0
interval = (int(sys.argv[2]) if len(sys.argv) > 2 else 1000) / 1000.0
# Some state that lives only in the heap, to prove memory came back.
squares = {i: i * i for i in range(10000)}
for i in itertools.count(1):
    if limit and i > limit:
        break
    assert squares[i % 10000] == (i % 10000) ** 2
    print(i, flush=True)
    time.sleep(interval)
