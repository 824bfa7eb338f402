"""A Python job whose threads wait on a threading.Event with a timeout (as
thread pools, Dask workers and logging handlers do: a futex wait with a
timeout in the C library) while the main thread prints "tick N" every
INTERVAL_MS, TICKS times; then it sets the event, joins the threads and
prints "done". Stopped and continued (SIGSTOP/SIGCONT), those waits go on
through restart_syscall.
usage: event_waits.py TICKS INTERVAL_MS"""
import sys
import threading
import time

ticks, interval = int(sys.argv[1]), int(sys.argv[2])
stop = threading.Event()


def waiter():
    while not stop.is_set():
        stop.wait(2.0)


threads = [threading.Thread(target=waiter) for _ in range(4)]
for t in threads:
    t.start()
for k in range(1, ticks + 1):
    time.sleep(interval / 1000)
    print("tick", k, flush=True)
stop.set()
for t in threads:
    t.join()
print("done", flush=True)
