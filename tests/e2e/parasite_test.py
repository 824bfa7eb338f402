#!/usr/bin/env python3
"""End-to-end tests of the parasite in `snap dump`, on tests/programs/victim.

Usage: parasite_test.py SNAP VICTIM (--manifest | --stop-signals | --faults [--kills N] [--seed S])

--manifest  dumps the running victim once and checks that the manifest
            records its handlers, sigaltstack, itimer, POSIX timer and pipe
            data, and that the victim keeps running correctly.
--stop-signals  sends SIGSTOP to the victim at several phases of a dump
            (each held 0.3 s), and checks that each dump succeeds, the victim
            is stopped after it, and, continued, ends as an uninterrupted run.
--faults    kills `snap dump` with SIGKILL at N (default 50) pseudo-random
            instants while it dumps the victim, and checks after each kill
            that the victim is untraced and running, and at the end that its
            output is exactly the expected sequence with no FAIL. A third of
            the kill instants is spread over a whole dump, a third over the
            window in which the parasite is in the target (both measured
            first, from snap's phase log, $SNAP_PHASE_LOG), and a third lands
            as soon as snap starts the sequence that keeps the thread stacks out of
            the snapshot, after which no mapping of the victim may stay
            MADV_DONTFORK (and the victim's own fork at its end must work).
            Reports where the kills landed.
"""
import ctypes
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from snaptest import check as expect, checks_result, reap_orphans  # noqa: E402

PR_SET_CHILD_SUBREAPER = 36
INSIDE = {"parasite-inject", "parasite-mapped", "parasite-service", "parasite-cure",
          "parasite-released"}




def expected_lines(n):
    x, acc, out = 42, 0.0, []
    for i in range(1, n + 1):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        acc += 0.25
        out.append(f"{i} {x:016x} {acc:.2f}")
    return out + ["DONE ok"]



class Victim:
    def __init__(self, exe, n, interval_ms, workdir):
        self.n = n
        self.out_path = os.path.join(workdir, "victim.out")
        self.out = open(self.out_path, "w")
        self.proc = subprocess.Popen([exe, str(n), str(interval_ms)], stdout=self.out,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        assert line.startswith("ready "), line
        self.pid = self.proc.pid

    def status(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                fields = dict(l.split(":\t", 1) for l in f.read().splitlines() if ":\t" in l)
            return fields.get("State", "?").strip(), int(fields.get("TracerPid", "0"))
        except FileNotFoundError:
            return "gone", 0

    def dontfork_mappings(self):
        """The victim's mappings marked MADV_DONTFORK ("dc"): it makes none
        itself, so any is one a dump left."""
        out, head = [], None
        try:
            with open(f"/proc/{self.pid}/smaps") as f:
                for l in f:
                    if l.startswith("VmFlags:"):
                        if "dc" in l.split()[1:]:
                            out.append(head)
                    elif not l.split(" ", 1)[0].endswith(":"):  # "start-end perms ..."
                        head = l.split(" ", 1)[0]
        except FileNotFoundError:
            pass
        return out

    def lines(self):
        with open(self.out_path) as f:
            return f.read().splitlines()

    def finish(self, timeout):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            expect(False, "victim finished in time")
        self.out.close()
        return rc

    def check_output(self, rc):
        lines = self.lines()
        fails = [l for l in lines if l.startswith("FAIL")]
        expect(not fails, f"victim reported no FAIL ({fails[:3]})")
        want = expected_lines(self.n)
        got = [l for l in lines if not l.startswith("FAIL")]
        if got != want:
            bad = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            print(f"  first difference at line {bad + 1}: got {got[bad:bad + 1]} want {want[bad:bad + 1]}")
        expect(got == want, f"victim printed the expected {self.n} lines and DONE ok")
        expect(rc == 0, f"victim exit status 0 (got {rc})")


def run_dump(snap, pid, out_dir, phase_log, pause_at=None):
    env = dict(os.environ, SNAP_PHASE_LOG=phase_log)
    if pause_at:
        env["SNAP_PHASE_PAUSE"] = pause_at  # snap sleeps there (parasite.h)
    return subprocess.Popen([snap, "dump", "--pid", str(pid), "-o", out_dir], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def dump_held_at(snap, pid, out_dir, log, at, timeout):
    """A dump that holds still at phase `at` (SNAP_PHASE_PAUSE), waited
    for until it is there (or `timeout` s, or its end): (the dump, whether
    it reached `at`)."""
    p = run_dump(snap, pid, out_dir, log, pause_at=at)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None and not any(
            name == at for _, name in read_phases(log)):
        time.sleep(0.0002)
    return p, any(name == at for _, name in read_phases(log))


def read_phases(path):
    try:
        with open(path) as f:
            return [(float(t), name) for t, _, name in (l.split() for l in f if l.strip())]
    except FileNotFoundError:
        return []


def test_manifest(snap, victim_exe, work):
    v = Victim(victim_exe, 40, 20, work)
    time.sleep(0.3)
    img = os.path.join(work, "img")
    p = run_dump(snap, v.pid, img, os.path.join(work, "phases"))
    _, err = p.communicate(timeout=30)
    expect(p.returncode == 0, f"snap dump exits 0 ({err.strip()})")
    state, tracer = v.status()
    expect(tracer == 0, "victim untraced after the dump")
    info = subprocess.run([snap, "info", img, "--manifest"], capture_output=True, text=True)
    expect(info.returncode == 0, f"snap info --manifest exits 0 ({info.stderr.strip()})")
    proc = json.loads(info.stdout)["checkpoint"]["processes"][0]
    acts = {a["signo"]: a for a in proc["sigactions"]}
    SA_ONSTACK, SA_SIGINFO = 0x08000000, 4
    expect(acts.get(14, {}).get("handler", 0) > 1 and acts[14]["flags"] & SA_ONSTACK,
           "SIGALRM handler recorded, with SA_ONSTACK")
    expect(acts.get(10, {}).get("handler", 0) > 1 and acts[10]["flags"] & SA_SIGINFO,
           "SIGUSR1 handler recorded, with SA_SIGINFO")
    expect(acts.get(15, {}).get("handler") == 0, "SIGTERM recorded as SIG_DFL")
    names = sorted(t.get("comm", "") for t in proc["threads"])
    expect(names == ["victim", "victim-w0", "victim-w1", "victim-w2"],
           f"each thread's name recorded ({names})")
    alt = proc["threads"][0].get("sigaltstack")
    expect(alt is not None and alt[0] != 0 and alt[2] == 65536, f"sigaltstack recorded ({alt})")
    its = proc.get("itimers") or []
    expect(len(its) == 3 and its[0]["interval_ns"] == 10_000_000, "ITIMER_REAL recorded (10 ms period)")
    pts = proc.get("posix_timers", [])
    expect(len(pts) == 1 and pts[0]["interval_ns"] == 20_000_000 and pts[0]["signo"] == 10
           and pts[0]["sigev_value"] == 0x5eed and pts[0]["clock_id"] == 1,
           f"POSIX timer recorded ({pts})")
    want = b"snap-victim: unread pipe data 0123456789\0".hex()
    pipes = [fd for fd in proc["fds"] if fd["type"] == "pipe" and fd.get("pipe_data") == want]
    expect(len(pipes) == 2, "pipe data recorded on the read end and the write end")
    expect(proc.get("dumpable") == 1 and proc.get("pdeathsig") == 0, "dumpable and pdeathsig recorded")
    with open(f"/proc/{v.pid}/maps") as f:
        maps = f.read()
    now = {int(l.split("-")[0], 16): l for l in maps.splitlines()}
    saved = {m["start"] for m in proc["mappings"]}
    expect(len(now) == len(saved),
           "no mapping left behind in the victim (same count as in the image; now but not saved: "
           f"{[now[a] for a in sorted(set(now) - saved)]}, saved but not now: "
           f"{[hex(a) for a in sorted(saved - set(now))]})")
    v.check_output(v.finish(30))


def expect_untraced(v, when):
    """After snap was killed: the victim must be untraced and running (or
    sleeping) again within 2 s; `when()` names the kill if not."""
    deadline = time.monotonic() + 2
    while True:
        state, tracer = v.status()
        if tracer == 0 and state[:1] in ("R", "S"):
            return
        if time.monotonic() > deadline:
            expect(False, f"{when()}: victim is {state}, tracer {tracer}")
            return
        time.sleep(0.005)


def test_faults(snap, victim_exe, work, kills, seed):
    rng = random.Random(seed)
    # Measure a dump first (a few times, keep the medians).
    probe = Victim(victim_exe, 100000, 20, work)
    time.sleep(0.3)
    totals, inside = [], []
    for i in range(5):
        log = os.path.join(work, f"measure{i}.log")
        t0 = time.monotonic()
        p = run_dump(snap, probe.pid, os.path.join(work, f"m{i}"), log)
        p.communicate(timeout=30)
        t1 = time.monotonic()
        ph = read_phases(log)
        if p.returncode != 0 or not ph:
            expect(False, f"measuring dump {i} succeeds")
            continue
        totals.append(t1 - t0)
        times = {name: t - t0 for t, name in ph}
        if "parasite-inject" in times and "parasite-released" in times:
            inside.append((times["parasite-inject"], times["parasite-released"]))
    probe.proc.kill()
    probe.proc.wait()
    probe.out.close()
    if not totals or not inside:
        expect(False, "the dump could be measured")
        return
    total = sorted(totals)[len(totals) // 2]
    win = (sorted(w[0] for w in inside)[len(inside) // 2],
           sorted(w[1] for w in inside)[len(inside) // 2])
    print(f"a dump takes {total * 1000:.1f} ms; the parasite is inside from "
          f"{win[0] * 1000:.1f} to {win[1] * 1000:.1f} ms")

    # The real run: enough lines to outlast the kills.
    interval = 20
    n = int((kills * (total + 0.08) + 1.5) * 1000 / interval) + 20
    v = Victim(victim_exe, n, interval, work)
    time.sleep(0.2)
    landed = {}
    failed_dumps = 0
    for k in range(kills):
        log = os.path.join(work, f"kill{k}.log")
        t0 = time.monotonic()  # delays count from the same point as when measured
        p = run_dump(snap, v.pid, os.path.join(work, f"k{k}"), log)
        if k % 3 == 0:
            # Anywhere in a whole dump.
            time.sleep(max(0.0, t0 + rng.uniform(0, total) - time.monotonic()))
        elif k % 3 == 2:
            # In the sequence that keeps the thread stacks out of the
            # snapshot (MADV_DONTFORK, clone, MADV_DOFORK inside the job):
            # as soon as snap logs that it starts it.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and p.poll() is None and not any(
                    name == "snapshot-sequence" for _, name in read_phases(log)):
                time.sleep(0.0001)
        else:
            # Inside the parasite's window: wait for snap to log that it
            # injects (start-up time varies with load), then a random part
            # of the window's measured length.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and p.poll() is None and not any(
                    name == "parasite-inject" for _, name in read_phases(log)):
                time.sleep(0.0002)
            time.sleep(rng.uniform(0, win[1] - win[0]))
        p.send_signal(signal.SIGKILL)
        _, err = p.communicate()
        ph = read_phases(log)
        if p.returncode not in (0, -9):
            print(f"kill {k}: the dump failed on its own: {err.strip()}")
            failed_dumps += 1
        ph = read_phases(log)
        last = ph[-1][1] if ph else "before-parasite"
        if p.returncode == 0:
            last = "finished"
        landed[last] = landed.get(last, 0) + 1
        expect_untraced(v, lambda: f"kill {k} at {(time.monotonic() - t0) * 1000:.1f} ms ({last})")
        # A kill inside that sequence leaves the victim to finish it alone:
        # give it a moment.
        deadline = time.monotonic() + 1
        while (left := v.dontfork_mappings()) and time.monotonic() < deadline:
            time.sleep(0.01)
        expect(not left, f"kill {k} ({last}): no mapping of the victim left MADV_DONTFORK ({left})")
        time.sleep(0.06)  # let it run a few lines between dumps
    n_inside = sum(c for name, c in landed.items() if name in INSIDE)
    print(f"{kills} kills (seed {seed}): {n_inside} while the parasite was inside; by last phase: "
          + ", ".join(f"{k}={c}" for k, c in sorted(landed.items())))
    expect(n_inside > 0, "some kills landed while the parasite was inside")
    n_sequence = landed.get("snapshot-sequence", 0)
    expect(n_sequence > 0, "some kills landed in the sequence that keeps the thread stacks out "
                           "of the snapshot (and the victim was left with none MADV_DONTFORK)")
    expect(failed_dumps == 0, "no dump between the kills failed (what a killed dump leaves does not "
                              "stand in the next one's way)")
    # States too brief to hit by chance, each held by snap (SNAP_PHASE_PAUSE)
    # and killed in: every thread but the leader pointed at the parasite's
    # thread entry, none set off yet. Let go by the kernel, each must run
    # the entry, find snap gone and return to its own code.
    for j, at in enumerate(["parasite-threads-ready"] * 3):
        p, reached = dump_held_at(snap, v.pid, os.path.join(work, f"p{j}"),
                                  os.path.join(work, f"pause{j}.log"), at, 5)
        p.send_signal(signal.SIGKILL)
        p.communicate()
        expect(reached, f"snap reached {at} before it was killed")
        expect_untraced(v, lambda: f"killed at {at}")
        time.sleep(0.06)
    # One complete dump collects any snapshot a killed dump left behind.
    p = run_dump(snap, v.pid, os.path.join(work, "final"), os.path.join(work, "final.log"))
    _, err = p.communicate()
    expect(p.returncode == 0, f"a complete dump after the kills succeeds ({err.strip()})")
    kids = []
    for t in os.listdir(f"/proc/{v.pid}/task"):
        with open(f"/proc/{v.pid}/task/{t}/children") as f:
            kids += f.read().split()
    expect(kids == [], f"nothing is left under the victim (snapshots collected): {kids}")
    rc = v.finish(n * interval / 1000 + 30)
    v.check_output(rc)


# Phases of a dump (parasite.h) at which snap holds still 0.3 s while a stop
# signal reaches the job: the parasite running in the leader (its service,
# its removal), the other threads about to run its thread entry, and the
# job stopped with no code of snap's in it, before and after its snapshot.
# "thread": the signal goes to one worker thread (tgkill), which takes it
# while it runs the parasite's thread entry.
STOP_PHASES = [("parasite-service", "process"), ("parasite-threads-ready", "process"),
               ("parasite-threads-ready", "thread"), ("parasite-cure", "process"),
               ("process-collected", "process"), ("job-released", "process")]
SYS_TGKILL = 234


def test_stop_signals(snap, victim_exe, work):
    """A SIGSTOP sent to the job while snap dumps it (Slurm's suspend, a
    user's kill -STOP) stops the job, whatever snap was doing then: the
    dump completes and the job is found stopped after it; SIGCONT lets it
    go on, and it ends as an uninterrupted run."""
    n, interval = 60, 20
    v = Victim(victim_exe, n, interval, work)
    time.sleep(0.3)
    libc = ctypes.CDLL(None, use_errno=True)
    worker = max(int(t) for t in os.listdir(f"/proc/{v.pid}/task"))
    for j, (at, target) in enumerate(STOP_PHASES):
        p, reached = dump_held_at(snap, v.pid, os.path.join(work, f"stop{j}"),
                                  os.path.join(work, f"stop{j}.log"), at, 10)
        if target == "thread":
            libc.syscall(SYS_TGKILL, v.pid, worker, signal.SIGSTOP)
        else:
            os.kill(v.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        _, err = p.communicate(timeout=60)
        at = f"{at} ({target})"
        expect(reached, f"snap reached {at}")
        expect(time.monotonic() - t0 < 5, f"the dump with a SIGSTOP at {at} did not wait for a "
                                          f"thread ({time.monotonic() - t0:.1f} s)")
        expect(p.returncode == 0, f"the dump with a SIGSTOP at {at} succeeds ({err.strip()})")
        deadline = time.monotonic() + 2
        while v.status()[0][:1] != "T" and time.monotonic() < deadline:
            time.sleep(0.005)
        state, tracer = v.status()
        expect(state[:1] == "T" and tracer == 0,
               f"the job is stopped, untraced, after a SIGSTOP at {at} (state {state}, tracer {tracer})")
        os.kill(v.pid, signal.SIGCONT)
        time.sleep(0.1)
    rc = v.finish(n * interval / 1000 + 30)
    v.check_output(rc)


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    snap, victim = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    args = sys.argv[3:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("warning: cannot become a child subreaper")
    kills = int(args[args.index("--kills") + 1]) if "--kills" in args else 50
    seed = int(args[args.index("--seed") + 1]) if "--seed" in args else 4
    with tempfile.TemporaryDirectory(prefix="snap-parasite-test-") as work:
        try:
            if "--manifest" in args:
                test_manifest(snap, victim, work)
            if "--stop-signals" in args:
                test_stop_signals(snap, victim, work)
            if "--faults" in args:
                test_faults(snap, victim, work, kills, seed)
        finally:
            reap_orphans()
    return checks_result()


if __name__ == "__main__":
    sys.exit(main())
