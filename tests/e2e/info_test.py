#!/usr/bin/env python3
"""End-to-end test of `snap info`: dump a running counter (leaving it
running), then check the text and --json descriptions of the image, and the
errors for a directory that is not an image.

Usage: info_test.py SNAP COUNTER
"""
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from snaptest import check as expect, checks_result, pid_alive as alive, reap_orphans  # noqa: E402

PR_SET_CHILD_SUBREAPER = 36




def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)



def output_lines(path):
    with open(path) as f:
        return f.read().split()


def check_image(snap, image, pid):
    p = run([snap, "info", image])
    expect(p.returncode == 0, "snap info exits 0", p)
    expect(f"process {pid} " in p.stdout, "text names the pid", p)
    expect("nanosleep" in p.stdout, "text names the nanosleep symbol where the thread stopped", p)
    expect("!" in p.stdout and "syscall" in p.stdout, "text shows module!symbol and the instruction", p)
    for word in ("mappings:", "fds:", "dedup ratio", "compression ratio", "image size"):
        expect(word in p.stdout, f"text has {word!r}", p)

    p = run([snap, "info", "--json", image])
    expect(p.returncode == 0, "snap info --json exits 0", p)
    try:
        doc = json.loads(p.stdout)
    except json.JSONDecodeError as e:
        expect(False, f"snap info --json prints valid JSON ({e})", p)
        return
    for key in ("format_version", "snap_version", "created", "hostname", "kernel_release",
                "processes", "stats"):
        expect(key in doc, f"JSON has {key}")
    procs = doc.get("processes", [])
    expect(len(procs) == 1 and procs[0].get("pid") == pid, "JSON names the pid")
    if not procs:
        return
    proc = procs[0]
    threads = proc.get("threads", [])
    expect(len(threads) == 1 and threads[0].get("tid") == pid, "JSON names the thread's tid")
    if threads:
        t = threads[0]
        expect(isinstance(t.get("symbol"), str) and "nanosleep" in t["symbol"],
               f"JSON thread symbol names nanosleep: {t.get('symbol')!r}")
        expect(t.get("instruction") == "syscall", f"JSON instruction is syscall: {t.get('instruction')!r}")
        expect(isinstance(t.get("ip"), str) and int(t["ip"], 16) > 0, "JSON ip is a hex address")
        expect(t.get("in_syscall") is True and t.get("syscall", {}).get("name") in
               ("nanosleep", "clock_nanosleep"), f"JSON names the syscall: {t.get('syscall')!r}")
    expect(any(m.get("kind") == "stack" for m in proc.get("mappings", [])), "JSON lists the stack mapping")
    expect(any(f.get("fd") == 1 for f in proc.get("fds", [])), "JSON lists fd 1")
    stats = doc.get("stats", {})
    for key in ("raw_bytes", "stored_bytes", "zero_pages", "unique_pages", "duplicate_pages",
                "dedup_ratio", "compression_ratio", "image_bytes"):
        expect(key in stats, f"JSON stats has {key}")
    expect(stats.get("raw_bytes", 0) > 0 and stats.get("image_bytes", 0) > 0, "JSON stats are non-zero")


def check_errors(snap, tmp):
    p = run([snap, "info", tmp])
    expect(p.returncode == 1 and "not a snap image" in p.stderr, "a non-image directory: exit 1", p)
    bad = os.path.join(tmp, "bad")
    os.mkdir(bad)
    with open(os.path.join(bad, "manifest.json"), "w") as f:
        f.write('{"format": "snap-image", "format_vers')
    p = run([snap, "info", bad])
    expect(p.returncode == 1 and "manifest.json" in p.stderr, "a damaged manifest: exit 1", p)
    p = run([snap, "info"])
    expect(p.returncode == 2, "no directory: usage error, exit 2", p)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    snap, counter = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"FAIL prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}")
        return 1

    with tempfile.TemporaryDirectory(prefix="snap-info-test-") as tmp:
        out_path = os.path.join(tmp, "counter.out")
        with open(out_path, "w") as out:
            job = subprocess.Popen([counter, "0", "300"], stdout=out, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)  # the counter spends nearly all its time in nanosleep
            image = os.path.join(tmp, "image")
            p = run([snap, "dump", "--pid", str(job.pid), "-o", image, "--leave-running"])
            expect(p.returncode == 0, "snap dump --leave-running succeeds", p)
            if p.returncode == 0:
                check_image(snap, image, job.pid)
            # The job still runs: alive, and still counting.
            before = len(output_lines(out_path))
            time.sleep(1.0)
            expect(alive(job.pid) and job.poll() is None, "the counter still runs after dump and info")
            expect(len(output_lines(out_path)) > before, "the counter still counts")
            check_errors(snap, tmp)
        finally:
            if job.poll() is None:
                job.send_signal(signal.SIGKILL)
            job.wait(timeout=10)
            reap_orphans()

    return checks_result()


if __name__ == "__main__":
    sys.exit(main())
