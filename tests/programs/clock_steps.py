"""Counts ROUNDS ticks of INTERVAL_MS by the monotonic and boot-time clocks
(time.monotonic, CLOCK_BOOTTIME), saying for each tick whether either clock
stepped backwards or jumped by more than a second: what a job timing itself
(a progress rate, a timeout's deadline) would trip over.
Usage: clock_steps.py ROUNDS INTERVAL_MS"""
import sys
import time

rounds, interval = int(sys.argv[1]), int(sys.argv[2]) / 1000
last = (time.monotonic(), time.clock_gettime(time.CLOCK_BOOTTIME))
for i in range(1, rounds + 1):
    time.sleep(interval)
    now = (time.monotonic(), time.clock_gettime(time.CLOCK_BOOTTIME))
    steps = [b - a for a, b in zip(last, now)]
    print(i, "ok" if all(0 <= s < interval + 1.0 for s in steps) else
          f"monotonic {steps[0]:+.3f} s, boot time {steps[1]:+.3f} s", flush=True)
    last = now
