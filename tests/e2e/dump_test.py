#!/usr/bin/env python3
"""snap dump, end to end: running programs are checkpointed and must carry on
unharmed; bad input gets a clear message, a non-zero exit and changes nothing.
Usage: dump_test.py SNAP PROGRAMS_BUILD PROGRAMS_SRC CASE"""
import ctypes
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from snaptest import Skip, case, expect, lines_of, main, pid_alive, start, start_job, wait_lines


def image_size(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


@case
def two_threads_256mib(env):
    out = env.path("mem.out")
    ticks = 30
    p = start([env.prog("memthreads"), "256", str(ticks), "100"], stdout_path=out)
    wait_lines(out, 4, timeout=120)
    ckpt = env.path("mem.ckpt")
    r = env.snap_run("dump", "--pid", str(p.pid), "-o", ckpt)
    print(r.stderr.strip())
    kids = [k for t in os.listdir(f"/proc/{p.pid}/task")
            for k in open(f"/proc/{p.pid}/task/{t}/children").read().split()]
    expect(kids == [], f"the dump left no process behind under the job (snapshot reaped): {kids}")
    size = image_size(ckpt)
    expect(size < 48 << 20, f"image of 256 MiB (10% random) is {size / 2**20:.1f} MiB < 48 MiB")
    expect(oct(os.stat(ckpt).st_mode & 0o777) == "0o700", "image directory is 0700")
    with open(os.path.join(ckpt, "manifest.json")) as f:
        man = json.load(f)
    proc = man["checkpoint"]["processes"][0] if "checkpoint" in man else man["processes"][0]
    expect(proc["pid"] == p.pid, "the manifest names the pid")
    tids = sorted(int(t) for t in os.listdir(f"/proc/{p.pid}/task"))
    expect(sorted(t["tid"] for t in proc["threads"]) == tids, f"both threads recorded: {tids}")
    info = json.loads(env.snap_run("info", "--json", ckpt).stdout)
    iproc = info["processes"][0]
    expect(iproc["pid"] == p.pid and sorted(t["tid"] for t in iproc["threads"]) == tids,
           "snap info --json names the pid and both threads")
    p.wait(timeout=120)
    lines = lines_of(out)
    expect(p.returncode == 0 and lines[-1] == "done", "the program finished normally")
    ticks_seen = [l for l in lines if l.startswith("tick ")]
    expect([int(l.split()[1]) for l in ticks_seen] == list(range(1, ticks + 1)), "every tick once, in order")
    expect(len({l.split()[2] for l in ticks_seen}) == 1, "memory checksum unchanged across the dump")


@case
def tree_with_shared_memory(env):
    p, out = start_job(env, "shm", [env.prog("sharedmem"), "32", "60", "50"], 3)
    ckpt = env.path("shm.ckpt")
    env.snap_run("dump", "--pid", str(p.pid), "-o", ckpt)
    doc = json.loads(env.snap_run("info", "--json", ckpt).stdout)
    expect(len(doc["processes"]) == 2, "parent and child are both in the image")
    dumped = []
    for proc in doc["processes"]:
        shared = [m for m in proc["mappings"] if m["kind"] == "shared_anon"]
        expect(len(shared) == 1, f"pid {proc['pid']} maps the shared region")
        dumped.append(shared[0]["pages_dumped"])
    expect(sum(dumped) == 32 * 256 and 32 * 256 in dumped,
           f"all 8192 pages of the shared region are in the image, read once: {dumped}")
    stats = doc["stats"]
    print(json.dumps(stats))
    expect(stats["unique_pages"] >= 8192, "the 8192 distinct shared pages are stored")
    p.wait(timeout=60)
    lines = lines_of(out)
    expect(len(lines) == 60 and all(l.endswith(" ok") for l in lines), "the child kept seeing intact memory")


@case
def python_leave_running(env):
    p, out = start_job(env, "py", [sys.executable, env.src("counter.py"), "10", "100"], 3)
    env.snap_run("dump", "--pid", str(p.pid), "-o", env.path("py.ckpt"))
    p.wait(timeout=60)
    expect(p.returncode == 0, "python counter exits 0 after being dumped")
    expect(lines_of(out) == [str(i) for i in range(1, 11)], "its output is that of an undisturbed run")


@case
def info_shows_parasite_state(env):
    p, out = start_job(env, "victim", [env.prog("victim"), "200", "20"], 3)
    ckpt = env.path("victim.ckpt")
    env.snap_run("dump", "--pid", str(p.pid), "-o", ckpt)
    doc = json.loads(env.snap_run("info", "--json", ckpt).stdout)
    proc = doc["processes"][0]
    handlers = {a["name"]: a for a in proc["sigactions"]}
    expect("on_alarm" in (handlers["SIGALRM"]["handler_symbol"] or ""), "SIGALRM handler named by its symbol")
    expect("SA_ONSTACK" in handlers["SIGALRM"]["flags_text"], "its SA_ONSTACK flag shown")
    expect(proc["threads"][0]["sigaltstack"]["size"] == 65536, "the 64 KiB alternate stack")
    expect(proc["itimers"]["real"]["interval_ns"] == 10_000_000, "ITIMER_REAL every 10 ms")
    timers = proc["posix_timers"]
    expect(len(timers) == 1 and timers[0]["signal"] == "SIGUSR1"
           and timers[0]["value"]["interval_ns"] == 20_000_000, "the POSIX timer (SIGUSR1, 20 ms)")
    pipes = [f for f in proc["fds"] if f["type"] == "pipe" and f.get("pipe_data_bytes")]
    expect(pipes, "unread pipe data recorded")
    text = env.snap_run("info", ckpt).stdout
    expect("POSIX timer 0" in text and "victim!on_alarm" in text, "the text output shows them too")
    p.wait(timeout=60)
    lines = [l for l in lines_of(out) if not l.startswith("ready ")]
    expect(lines[-1] == "DONE ok" and not any("FAIL" in l for l in lines), "the victim's own checks pass")


def expect_refused(env, args, exit_code, words, what):
    r = env.snap_run("dump", *args, check=False)
    expect(r.returncode == exit_code, f"{what}: exit {exit_code} (got {r.returncode})")
    for w in words:
        expect(w in r.stderr, f"{what}: message says '{w}': {r.stderr.strip()}")
    return r


@case
def bad_inputs(env):
    victim, out = start_job(env, "victim", [env.prog("counter"), "100000", "50"], 1)
    dest = env.path("nothing")

    expect_refused(env, ["--pid", "4000000", "-o", dest], 1, ["no process with pid 4000000"], "no such pid")
    expect_refused(env, ["--pid", "2", "-o", dest], 1, ["kernel thread"], "kernel thread")
    expect_refused(env, ["--pid", str(os.getpid()), "-o", dest], 1, ["ancestor"], "snap's own ancestor")
    expect_refused(env, ["-o", dest], 2, ["--pid"], "missing --pid")
    expect_refused(env, ["--pid", str(victim.pid)], 2, ["-o"], "missing -o")

    zombie = subprocess.Popen(["true"])
    time.sleep(0.3)  # exited, not yet waited for: a zombie
    expect_refused(env, ["--pid", str(zombie.pid), "-o", dest], 1, ["zombie"], "zombie")
    zombie.wait()

    # Already traced: attach to the victim ourselves first.
    libc = ctypes.CDLL(None, use_errno=True)
    PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH = 0x4206, 0x4207, 17
    expect(libc.ptrace(PTRACE_SEIZE, victim.pid, 0, 0) == 0, "the test holds the victim with ptrace")
    expect_refused(env, ["--pid", str(victim.pid), "-o", dest], 1, ["already traced"], "traced by another")
    libc.ptrace(PTRACE_INTERRUPT, victim.pid, 0, 0)  # detaching needs a stopped tracee
    os.waitpid(victim.pid, 0x40000000)  # __WALL
    expect(libc.ptrace(PTRACE_DETACH, victim.pid, 0, 0) == 0, "the test let go of the victim")

    # Not allowed to trace: an unprivileged user against a root process.
    if os.geteuid() == 0 and shutil.which("setpriv"):
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", env.snap,
                            "dump", "--pid", str(victim.pid), "-o", "/tmp/snap-e2e-nobody"],
                           capture_output=True, text=True, timeout=60)
        expect(r.returncode == 1 and "cannot attach" in r.stderr and "hint:" in r.stderr,
               f"EPERM is explained: {r.stderr.strip()}")
    else:
        print("SKIP part: EPERM case needs root and setpriv")

    # An existing non-empty directory is refused without --force.
    full = env.path("occupied")
    os.mkdir(full)
    with open(os.path.join(full, "precious"), "w") as f:
        f.write("keep me")
    expect_refused(env, ["--pid", str(victim.pid), "-o", full], 1, [full], "non-empty output dir")
    expect(os.listdir(full) == ["precious"], "its contents are untouched")
    expect(not os.path.exists(dest), "no output was created by any refused dump")

    n = len(lines_of(out))
    wait_lines(out, n + 3)
    expect(victim.poll() is None, "the victim kept running through all of it")


def mount_tmpfs(env, name, opts):
    d = env.path(name)
    os.mkdir(d)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "snap-e2e", d], capture_output=True, text=True)
    if r.returncode != 0:
        raise Skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    return d


@case
def full_and_readonly_disk(env):
    if os.geteuid() != 0:
        raise Skip("mounting a small tmpfs needs root")
    victim, out = start_job(env, "victim", [env.prog("memthreads"), "64", "100000", "50"], 2, timeout=60)
    try:
        small = mount_tmpfs(env, "small", "size=1m")
        r = env.snap_run("dump", "--pid", str(victim.pid), "-o", os.path.join(small, "ck"), check=False)
        expect(r.returncode == 1, f"a full disk fails the dump with exit 1 (got {r.returncode})")
        expect("No space left" in r.stderr, f"the message says the disk is full: {r.stderr.strip()}")
        expect(os.listdir(small) == [], f"partial files removed: {os.listdir(small)}")

        ro = mount_tmpfs(env, "ro", "size=64m,ro")
        r = env.snap_run("dump", "--pid", str(victim.pid), "-o", os.path.join(ro, "ck"), check=False)
        expect(r.returncode == 1, f"a read-only disk fails the dump with exit 1 (got {r.returncode})")
        expect("Read-only" in r.stderr, f"the message says read-only: {r.stderr.strip()}")
    finally:
        for d in ("small", "ro"):
            subprocess.run(["umount", env.path(d)], capture_output=True)
    n = len(lines_of(out))
    wait_lines(out, n + 3)
    expect(victim.poll() is None, "the job kept running")
    sums = {l.split()[2] for l in lines_of(out) if l.startswith("tick ")}
    expect(len(sums) == 1, "its memory is intact (checksum unchanged)")


if __name__ == "__main__":
    main()
