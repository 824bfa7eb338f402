#!/usr/bin/env python3
"""Checkpoint series end to end: `snap run` (periodic checkpoints, resume
after kill -9), `snap checkpoint` from outside and from inside the job,
`snap watch --file`, and nothing lost when a checkpoint fails or snap dies.
Usage: series_test.py SNAP PROGRAMS_BUILD PROGRAMS_SRC CASE"""
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from snaptest import (PingServer, Skip, _started, case, expect, lines_of, main, pid_alive, reap_orphans, start,
                      wait_for, wait_lines)
from compare_runs import uninterrupted


def started_pid(err_path):
    """The job's pid, from snap run's first line ("started pid N" / "resumed pid N")."""
    m = re.search(r"snap run: (started|resumed) pid (\d+)", open(err_path).read())
    return int(m.group(2)) if m else None


def tree_of(pid):
    """pid and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def kill_everything(run_proc, err_path):
    """kill -9 of snap run and of the whole job, as a node failure would."""
    job = started_pid(err_path)
    victims = tree_of(job) if job else []
    run_proc.kill()
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run_proc.wait()

    def gone():
        # Reaped, not only dead: the job's processes come to this test (a
        # subreaper) once snap run is gone, and a zombie still holds its pid
        # (a JVM's many threads take a while to exit).
        reap_orphans()
        return not any(os.path.exists(f"/proc/{p}") for p in victims)
    wait_for(gone, 10, "the job to be gone")


def thread_states(pid):
    """"TID STATE WCHAN" of every thread of pid and its descendants."""
    out = []
    for p in [pid] + tree_of(pid):
        try:
            for t in sorted(os.listdir(f"/proc/{p}/task"), key=int):
                stat = open(f"/proc/{p}/task/{t}/stat").read().rsplit(")", 1)[1].split()
                wchan = open(f"/proc/{p}/task/{t}/wchan").read()
                out.append(f"{p}/{t} {stat[0]} {wchan}")
        except OSError:
            continue
    return out


def wait_or_explain(run, timeout):
    """The exit status of `run`'s snap run; if it has not ended within
    timeout s, fails with what it said and where each of its processes'
    threads is, to tell a hung restore from a hung job or checkpoint."""
    try:
        return run.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        states = thread_states(run.proc.pid)
        raise AssertionError(f"snap run (pid {run.proc.pid}) still running after {timeout} s; it said:\n"
                             f"{run.stderr()}\nthreads (tid state wchan): {states}")


class Run:
    """One `snap run` of the test: stdout to `out` opened with `mode` ("w"
    for a first start, "a" to append; a resumed job reopens its own files
    itself), stderr to its own file."""
    def __init__(self, env, name, ckpt, argv, out, mode="w", extra=()):
        self.err = env.path(f"{name}.err")
        self.proc = subprocess.Popen([env.snap, "run", "--dir", ckpt, *extra, "--", *argv],
                                     stdout=open(out, mode), stderr=open(self.err, "w"),
                                     stdin=subprocess.DEVNULL)
        _started.append(self.proc)

    def stderr(self):
        return open(self.err).read()


def checkpoints_made(run):
    return len(re.findall(r"snap run: checkpoint \d+:", run.stderr()))


def killed_after_checkpoints(env, ckpt, argv, out, interval, checkpoints, timeout=30, extra=(),
                             linger=0):
    """A first `snap run --interval` of argv (appending to out; `extra`
    options too), killed with -9, it and everything it started, `linger` s
    after it has made `checkpoints` checkpoints, still running the job."""
    r1 = Run(env, "run1", ckpt, argv, out, "a", extra=["--interval", str(interval), *extra])
    wait_for(lambda: checkpoints_made(r1) >= checkpoints or r1.proc.poll() is not None, timeout,
             f"{checkpoints} periodic checkpoint(s)")
    time.sleep(linger)
    expect(r1.proc.poll() is None, f"snap run keeps running the job ({r1.stderr().strip()[-500:]})")
    kill_everything(r1.proc, r1.err)
    return r1


@case
def run_interval_resume(env):
    # The seeds' first wish: checkpoint every N seconds; after kill -9 of
    # everything, the same command resumes from the latest checkpoint.
    ckpt, out = env.path("ck"), env.path("count.out")
    argv = [sys.executable, env.src("counter.py"), "40", "200"]
    killed_after_checkpoints(env, ckpt, argv, out, interval=2, checkpoints=2)
    before = lines_of(out)
    k = int(before[-1])
    expect(k < 40, f"killed mid-run at {k}")
    r2 = Run(env, "run2", ckpt, argv, out, "a", extra=["--interval", "2"])
    rc = wait_or_explain(r2, 60)
    expect(rc == 0, f"the resumed job ran to its end, snap run exited 0 (got {rc}: {r2.stderr().strip()})")
    expect("resumed pid" in r2.stderr(), "the second snap run resumed from a checkpoint")
    nums = [int(x) for x in lines_of(out)]
    expect(nums[:len(before)] == list(range(1, k + 1)), "the first run printed 1..k")
    after = nums[len(before):]
    m = after[0]
    expect(after == list(range(m, 41)), f"the resumed run printed {m}..40 in order")
    # The output file is opened O_APPEND: what the job printed after the last
    # checkpoint comes again. No number is missing; at most an interval
    # (2 s = 10 numbers, plus slack) repeats.
    expect(2 <= m <= k + 1, f"resumed at {m}, not from the start, with nothing missing (k = {k})")
    expect(k - m + 1 <= 13, f"{k - m + 1} numbers repeated, within what the 2 s interval explains")


def resumed_as_uninterrupted(out, k, ref):
    """The job's output `out` (appended to) is `k` lines of a first run
    killed mid-run, then those of its resumed run: the first run printed
    what an uninterrupted run (`ref`) does, and the resumed one the rest of
    it from its checkpoint's step on."""
    lines = lines_of(out)
    after = lines[k:]
    expect(lines[:k] == ref[:k], "the first run printed what an uninterrupted run does")
    expect(0 < len(after) <= len(ref) and after == ref[len(ref) - len(after):],
           f"resumed, the job printed the rest of an uninterrupted run's output: "
           f"{[l for l in after if l not in ref][:3]} ({len(after)} lines)")


def killed_then_resumed(env, r1, ckpt, argv, out, ref, extra, before_resume=None):
    """Kills the first run r1, it and everything it started, with -9; the
    same snap run (options `extra`) resumes the job from its latest
    checkpoint, and the job runs to its end printing the rest of `ref`
    (resumed_as_uninterrupted). `before_resume` runs in between. Returns
    the lines the first run printed."""
    kill_everything(r1.proc, r1.err)
    k = len(lines_of(out))
    if before_resume:
        before_resume()
    r2 = Run(env, "run2", ckpt, argv, out, "a", extra=extra)
    rc = wait_or_explain(r2, 60)
    expect(rc == 0 and "resumed pid" in r2.stderr(),
           f"resumed, and the job ran to its end (exit {rc}: {r2.stderr().strip()[-500:]})")
    resumed_as_uninterrupted(out, k, ref)
    return k


@case
def with_files_put_back(env):
    # A job that reads back, at every step, files it wrote at the step
    # before and closed (tests/programs/history_file.py; Quantum ESPRESSO's
    # molecular dynamics does so with its outdir): killed after it ran on
    # past its latest checkpoint, it resumes from that checkpoint and must
    # find those files as they were then. With --with-files DIR each
    # checkpoint holds DIR (a 2 MiB file among them, in the page store) and
    # the resume puts it back; its output equals an uninterrupted run's.
    # Without the option, the resumed job finds the files of later steps.
    prog = env.src("history_file.py")
    rc, ref = uninterrupted([sys.executable, prog, "40", "0", env.path("ref")])
    expect(rc == 0 and len(ref) == 40 and not any("stale" in l for l in ref),
           f"an uninterrupted run ({rc}, {ref[-2:]})")
    ckpt, out, d = env.path("ck"), env.path("history.out"), env.path("work")
    argv = [sys.executable, prog, "40", "150", d]
    killed_after_checkpoints(env, ckpt, argv, out, interval=1, checkpoints=2,
                             extra=["--with-files", d], linger=0.7)
    before = lines_of(out)
    k = len(before)
    expect(0 < k < 40 and before == ref[:k], f"killed mid-run after {k} steps, as the reference")
    r2 = Run(env, "run2", ckpt, argv, out, "a", extra=["--interval", "1", "--with-files", d])
    rc = wait_or_explain(r2, 60)
    expect(rc == 0 and "resumed pid" in r2.stderr(),
           f"resumed, and the job ran to its end (exit {rc}: {r2.stderr().strip()[-500:]})")
    after = lines_of(out)[k:]
    m = 40 - len(after)  # the steps the checkpoint had done
    expect(m < k, f"the job ran on past its checkpoint (step {m}) before it was killed (step {k}): "
                  "the files it left were of later steps")
    expect(after == ref[m:], f"resumed from step {m}, it printed what an uninterrupted run does "
                             f"(no stale files): {[l for l in after if l not in ref][:3]}")


@case
def with_files_unchanged_referred(env):
    # A series with --with-files does not read again a named file that is
    # still as the checkpoint before kept it (the same inode, size, times
    # and status change time): its pages refer to that checkpoint's. A file
    # rewritten in place behind the job's back with its size and
    # modification time set back (only its status change time tells) is
    # read again. After kill -9 and the named directory gone (another
    # node's scratch), the resume puts back what the latest checkpoint
    # held: the rewritten contents, and the job's own unchanged input,
    # which its steps check, so its output equals an uninterrupted run's.
    prog = env.src("history_file.py")
    rc, ref = uninterrupted([sys.executable, prog, "40", "0", env.path("ref")])
    expect(rc == 0 and len(ref) == 40, f"an uninterrupted run ({rc}, {ref[-2:]})")
    ckpt, out, d = env.path("ck"), env.path("history.out"), env.path("work")
    os.makedirs(d)
    notes = os.path.join(d, "notes.bin")  # the job never touches it
    old, new = os.urandom(2 << 20), os.urandom(2 << 20)
    with open(notes, "wb") as f:
        f.write(old)
    argv = [sys.executable, prog, "40", "300", d]
    r1 = Run(env, "run1", ckpt, argv, out, "a", extra=["-v", "--interval", "1", "--with-files", d])
    reused = lambda: re.findall(r"(\d+) file\(s\), [0-9.]+ MiB, as checkpoint \d+ kept them",
                                r1.stderr())
    both = lambda: any(int(n) >= 2 for n in reused())
    wait_for(lambda: both() or r1.proc.poll() is not None, 30,
             "a checkpoint that referred to the one before for the unchanged files")
    expect(both(), f"the job's input and notes.bin not read again: {reused()}")
    st = os.stat(notes)
    with open(notes, "r+b") as f:  # in place: the same inode and size
        f.write(new)
    os.utime(notes, ns=(st.st_atime_ns, st.st_mtime_ns))
    n = checkpoints_made(r1)
    wait_for(lambda: checkpoints_made(r1) >= n + 2 or r1.proc.poll() is not None, 30,
             "two checkpoints after notes.bin was rewritten")
    expect(r1.proc.poll() is None, f"snap run keeps running the job ({r1.stderr().strip()[-500:]})")
    k = killed_then_resumed(env, r1, ckpt, argv, out, ref, ["--interval", "1", "--with-files", d],
                            before_resume=lambda: shutil.rmtree(d))
    expect(0 < k < 40, f"killed mid-run after {k} steps")
    with open(notes, "rb") as f:
        got = f.read()
    expect(got == new, "notes.bin came back as rewritten before the latest checkpoint"
                       + (" (the older contents: it was not read again)" if got == old else ""))


@case
def with_files_mapped_then_closed(env):
    # A named file the job wrote through a shared mapping and wrote again
    # (no page fault, so its times stay as they were) before it unmapped it
    # (tests/programs/mapped_then_closed.py): a checkpoint after the unmap
    # must read it again, though its times say it is as the checkpoint
    # before (which saw it mapped) kept it. Killed after two such
    # checkpoints and resumed, the job finds what it wrote last. (Where
    # snap run tracks writes, as here, the tracking write-protects the page
    # at each checkpoint, so the second write faults and moves the ctime;
    # where the kernel cannot track writes, only the rule that a file mapped
    # to write through in the checkpoint before is read again keeps it.)
    prog = env.src("mapped_then_closed.py")
    rc, ref = uninterrupted([sys.executable, prog, "40", "0", env.path("ref")])
    expect(rc == 0 and "unmapped" in ref, f"an uninterrupted run ({rc}, {ref[-2:]})")
    ckpt, out, d = env.path("ck"), env.path("mapped.out"), env.path("work")
    argv = [sys.executable, prog, "40", "300", d]
    r1 = Run(env, "run1", ckpt, argv, out, "a", extra=["--interval", "1", "--with-files", d])
    wait_for(lambda: "unmapped" in lines_of(out) or r1.proc.poll() is not None, 30,
             "the job unmapped its file")
    n = checkpoints_made(r1)
    wait_for(lambda: checkpoints_made(r1) >= n + 2 or r1.proc.poll() is not None, 30,
             "two checkpoints after the unmap")
    expect(r1.proc.poll() is None, f"snap run keeps running the job ({r1.stderr().strip()[-500:]})")
    killed_then_resumed(env, r1, ckpt, argv, out, ref, ["--interval", "1", "--with-files", d])


@case
def deleted_file_unchanged_referred(env):
    # A job's unlinked scratch file that it wrote once and only reads (a
    # Fortran STATUS='SCRATCH' table; tests/programs/quiet_scratch.py, 16
    # MiB): a checkpoint of the series after the one that first recorded it
    # settled does not read it again, its pages refer to that checkpoint's.
    # Killed right after such a checkpoint and resumed from it, the job
    # reads the file back as it was (each tick prints a digest of a MiB of
    # it) and, past the tick where it rewrites part of the file, on as an
    # uninterrupted run.
    prog, d = env.src("quiet_scratch.py"), env.path("")
    rc, ref = uninterrupted([sys.executable, prog, d, "16", "40", "0", "30"])
    expect(rc == 0 and len(ref) == 40, f"an uninterrupted run ({rc}, {ref[-2:]})")
    ckpt, out = env.path("ck"), env.path("scratch.out")
    argv = [sys.executable, prog, d, "16", "40", "0.3", "30"]
    r1 = Run(env, "run1", ckpt, argv, out, "a", extra=["-v", "--interval", "1"])

    def latest_referred():
        err = r1.stderr()
        made = re.findall(r"snap run: checkpoint (\d+):", err)
        bases = re.findall(r"deleted files and memfds as checkpoint (\d+) kept them: not read again",
                           err)
        return bool(made) and str(int(made[-1]) - 1) in bases

    wait_for(lambda: latest_referred() or r1.proc.poll() is not None, 30,
             "a checkpoint that referred to the one before for the scratch file")
    k = killed_then_resumed(env, r1, ckpt, argv, out, ref, ["--interval", "1"])
    expect(0 < k < 30, f"killed after {k} ticks, before the rewrite at tick 30")


@case
def temp_file_unchanged_referred(env):
    # The same job with its scratch file left in a temporary directory
    # (quiet_scratch.py keep, 16 MiB in the test's directory under /tmp),
    # which snap keeps in each checkpoint (here each one asked for with
    # snap checkpoint): a checkpoint after the one that recorded the file
    # settled refers to that one's pages, it does not read the file again.
    # At tick 30 the job rewrites the file's first 4 MiB: the checkpoint
    # right after reads it again, and later ones refer to the next that
    # recorded it settled. Killed right after such a checkpoint, the file
    # then removed (a node's /tmp cleaned), the resume makes the file again
    # from that checkpoint: the job's digests of the rewritten part (ticks
    # 32, 39, 42, 45, 48, 55, ...) and of the rest equal an uninterrupted
    # run's.
    prog, d = env.src("quiet_scratch.py"), env.path("")
    rc, ref = uninterrupted([sys.executable, prog, d, "16", "70", "0", "30", "keep"])
    expect(rc == 0 and len(ref) == 70, f"an uninterrupted run ({rc}, {ref[-2:]})")
    ckpt, out = env.path("ck"), env.path("scratch.out")
    argv = [sys.executable, prog, d, "16", "70", "0.3", "30", "keep"]
    r1 = Run(env, "run1", ckpt, argv, out, "a", extra=["-v"])
    referral = (r"file\(s\) of temporary directories, [0-9.]+ MiB, as checkpoint (\d+) kept them: "
                r"not read again")

    def checkpoint():
        """A checkpoint now; whether it referred to the one before for the
        file (what a checkpoint says comes before its "checkpoint K:" line)."""
        env.snap_run("checkpoint", "--dir", ckpt, "--wait")
        said = re.split(r"snap run: checkpoint \d+:", r1.stderr())
        expect(r1.proc.poll() is None, f"snap run keeps running the job ({r1.stderr()[-500:]})")
        return re.search(referral, said[-2]) is not None

    wait_lines(out, 1)  # the file written
    time.sleep(2.5)  # its ctime settled
    expect(not checkpoint(), "the first checkpoint read the file")
    expect(checkpoint(), "the next one referred to it for the unchanged file")
    wait_for(lambda: len(lines_of(out)) >= 30, 30, "the rewrite")
    expect(not checkpoint(), "the checkpoint right after the rewrite read the file again")
    time.sleep(2.5)
    checkpoint()
    expect(checkpoint(), "a checkpoint after the one that read the rewritten file settled "
                         "referred to it")
    k = killed_then_resumed(env, r1, ckpt, argv, out, ref, [],
                            before_resume=lambda: os.unlink(os.path.join(d, "scratch")))
    expect(30 < k < 62, f"killed after {k} ticks, after the rewrite, with rewritten parts left")


@case
def resume_on_another_cpu(env):
    # Requeued onto a node whose CPU lacks a feature the job's had (its
    # latest checkpoint given such a CPU's record, tests/e2e/image_json.cc):
    # the same snap run refuses to resume, exits 1 before anything runs and
    # says what to do; with --allow-changed-cpu it resumes the job, which
    # runs to its end.
    ckpt, out = env.path("ck"), env.path("count.out")
    argv = [sys.executable, env.src("counter.py"), "30", "200"]
    killed_after_checkpoints(env, ckpt, argv, out, interval=1, checkpoints=1)
    latest = os.path.join(ckpt, os.readlink(os.path.join(ckpt, "latest")))
    c = env.checkpoint_json(latest)
    c["cpu"]["features"] = sorted(c["cpu"]["features"] + ["avx512er"
                                  if "avx512er" not in c["cpu"]["features"] else "fma4"])
    env.put_checkpoint_json(latest, c)
    before = lines_of(out)
    r2 = Run(env, "run2", ckpt, argv, out, "a", extra=["--interval", "1"])
    rc = wait_or_explain(r2, 60)
    expect(rc == 1 and "this CPU lacks" in r2.stderr() and "--allow-changed-cpu" in r2.stderr(),
           f"refused, saying what to do (exit {rc}: {r2.stderr().strip()})")
    expect(lines_of(out) == before, "nothing ran")
    r3 = Run(env, "run3", ckpt, argv, out, "a", extra=["--interval", "1", "--allow-changed-cpu"])
    rc = wait_or_explain(r3, 60)
    expect(rc == 0 and "resumed pid" in r3.stderr() and "this CPU lacks" in r3.stderr(),
           f"--allow-changed-cpu resumed it, warning (exit {rc}: {r3.stderr().strip()})")
    nums = [int(x) for x in lines_of(out)]
    expect(nums[-1] == 30 and nums[len(before):] == list(range(nums[len(before)], 31)),
           "the resumed job ran on to 30")


@case
def java_thread_pool(env):
    # A JVM (tests/programs/WorkPool.java: a pool of 8 threads, a parallel
    # stream, the garbage collector busy, a growing heap) checkpointed every
    # second: every checkpoint succeeds and the job runs on unharmed (the snap
    # before aborted JVMs, "The futex facility returned an unexpected error
    # code", and failed a third of the checkpoints, "became MADV_DONTFORK (or
    # was remapped)"); after kill -9 of everything the same command resumes
    # it, and the output is an uninterrupted run's, the lines printed after
    # the last checkpoint again.
    java = shutil.which("java")
    if not java:
        raise Skip("no java here (scripts/setup installs openjdk-17-jdk-headless)")
    argv = [java, "-Xmx1g", env.src("WorkPool.java"), "60", "100"]
    ref = subprocess.run(argv[:-1] + ["0"], capture_output=True, text=True, timeout=120)
    expected = ref.stdout.splitlines()
    expect(ref.returncode == 0 and len(expected) == 60, f"an uninterrupted run ({ref.returncode}, "
                                                         f"{ref.stderr.strip()[-300:]})")
    ckpt, out = env.path("ck"), env.path("java.out")
    r1 = killed_after_checkpoints(env, ckpt, argv, out, interval=1, checkpoints=4, timeout=120)
    expect("failed" not in r1.stderr(), f"every checkpoint succeeded: {r1.stderr().strip()[-500:]}")
    before = lines_of(out)
    k = len(before)
    expect(0 < k < 60 and before == expected[:k], f"killed mid-run after {k} lines, as the reference")
    r2 = Run(env, "run2", ckpt, argv, out, "a", extra=["--interval", "1"])
    rc = wait_or_explain(r2, 120)
    expect(rc == 0 and "resumed pid" in r2.stderr(),
           f"the resumed job ran to its end, snap run exited 0 (got {rc}: {r2.stderr().strip()[-500:]})")
    after = lines_of(out)[k:]
    expect(len(after) > 0 and after[0] in expected and after == expected[expected.index(after[0]):]
           and expected.index(after[0]) <= k,
           f"the resumed run printed the reference from a checkpoint on to its end ({after[:1]}, "
           f"{after[-1:]}, {len(after)} lines after {k})")
    expect("failed" not in r2.stderr(), f"every checkpoint of the resumed run succeeded: "
                                        f"{r2.stderr().strip()[-500:]}")


@case
def second_run_on_same_dir_refused(env):
    ckpt = env.path("ck")
    r1 = Run(env, "run1", ckpt, [env.prog("counter"), "100", "100"], env.path("a.out"))
    wait_lines(env.path("a.out"), 2)
    r2 = env.snap_run("run", "--dir", ckpt, "--", env.prog("counter"), "3", "10", check=False)
    expect(r2.returncode == 1, f"a second snap run on the same directory exits 1 (got {r2.returncode})")
    expect(f"in use by snap run pid {r1.proc.pid}" in r2.stderr,
           f"it names the snap run holding it: {r2.stderr.strip()}")
    expect(r1.proc.poll() is None, "the first snap run goes on")
    kill_everything(r1.proc, r1.err)


def self_checkpoint(env, argv_of):
    ckpt, out = env.path("ck"), env.path("self.out")
    argv = argv_of(ckpt)
    ref = subprocess.run([x if x != ckpt else env.path("unused") for x in argv],
                         capture_output=True, text=True).stdout
    ref = ref.replace("checkpoint call returned 256", "checkpoint call returned 0")
    r1 = Run(env, "run1", ckpt, argv, out)
    wait_for(lambda: any(l.startswith("checkpoint call returned") for l in lines_of(out)), 30,
             "the job's own checkpoint call to return")
    expect("checkpoint call returned 0" in lines_of(out),
           f"the call succeeded inside the job ({lines_of(out)[-1]}; {r1.stderr().strip()})")
    wait_lines(out, len(lines_of(out)) + 3)
    kill_everything(r1.proc, r1.err)
    before = open(out).read()
    r2 = Run(env, "run2", ckpt, argv, out, "a")
    rc = r2.proc.wait(timeout=60)
    expect(rc == 0 and "resumed pid" in r2.stderr(),
           f"the same snap run command resumed the job (exit {rc}: {r2.stderr().strip()})")
    got = open(out).read()
    expect(got == ref, f"it continued right after its checkpoint call: output identical to an "
                       f"uninterrupted run\nbefore: {before!r}\ngot:    {got!r}\nwant:   {ref!r}")


@case
def self_checkpoint_c(env):
    self_checkpoint(env, lambda ck: [env.prog("selfck"), env.snap, ck, "15", "5", "200"])


@case
def self_checkpoint_python(env):
    self_checkpoint(env, lambda ck: [sys.executable, env.src("selfck.py"), env.snap, ck, "15", "5",
                                     "200"])


@case
def checkpoint_kill_then_resume(env):
    # snap checkpoint --kill from outside: the job ends once the checkpoint
    # is safe (requeue); snap run says so with exit 75; running the same
    # command again resumes it.
    ckpt, out = env.path("ck"), env.path("k.out")
    argv = [env.prog("counter"), "30", "100"]
    r1 = Run(env, "run1", ckpt, argv, out)
    wait_lines(out, 5)
    r = env.snap_run("checkpoint", "--dir", ckpt, "--wait", "--kill")
    expect("checkpoint 1 of" in r.stderr, f"snap checkpoint reports the safe checkpoint: {r.stderr.strip()}")
    rc = r1.proc.wait(timeout=20)
    expect(rc == 75, f"snap run exits 75 when a checkpoint stopped the job (got {rc})")
    job = started_pid(r1.err)
    expect(not pid_alive(job), "the job is gone")
    n = len(lines_of(out))
    r2 = Run(env, "run2", ckpt, argv, out, "a")
    rc = r2.proc.wait(timeout=60)
    expect(rc == 0, f"resumed and finished (exit {rc}: {r2.stderr().strip()})")
    expect(lines_of(out) == [str(i) for i in range(1, 31)],
           f"output continued from line {n} with nothing missing or repeated")
    r = env.snap_run("checkpoint", "--dir", ckpt, "--wait", check=False)
    expect(r.returncode == 1 and "no 'snap run' owns" in r.stderr,
           f"with no snap run, snap checkpoint says so: {r.stderr.strip()}")


@case
def scratch_file_carried(env):
    # A job under snap run holding a 3 MiB scratch file in its $TMPDIR
    # (tests/programs/scratch_file.py): each checkpoint keeps its contents in
    # the series' page store, the second one referring to the pages the
    # first stored; stopped by `snap checkpoint --kill`, its $TMPDIR emptied
    # (a requeued job on another node), the same command resumes it with
    # the file made again, and it ends as an uninterrupted run.
    import json
    import shutil
    tmpdir = env.path("scratch_tmpdir")
    os.makedirs(tmpdir)
    argv = [sys.executable, env.src("scratch_file.py"), "3", "40", "50"]
    ref = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, TMPDIR=tmpdir)).stdout.splitlines()
    expect(len(ref) == 41 and ref[-1] == "done", f"an uninterrupted run ends: {ref[-2:]}")
    shutil.rmtree(os.path.join(tmpdir, "scratch"))
    ckpt, out = env.path("ck"), env.path("scratch.out")
    os.environ["TMPDIR"] = tmpdir  # the job's (snap run passes its environment on)
    try:
        r1 = Run(env, "run1", ckpt, argv, out)
        wait_lines(out, 5)
        env.snap_run("checkpoint", "--dir", ckpt, "--wait")
        env.snap_run("checkpoint", "--dir", ckpt, "--wait", "--kill")
        rc = r1.proc.wait(timeout=20)
        expect(rc == 75, f"snap run exits 75 when a checkpoint stopped the job (got {rc})")
        info = json.loads(env.snap_run("info", ckpt, "--json").stdout)
        series = {c["number"]: c for c in info["series"]}
        expect(info["stats"]["file_pages"] == 768 and series[2]["new_bytes"] < 0.5 * series[1]["new_bytes"],
               f"both checkpoints keep the file, the second one adding little ({series[1]['new_bytes']} "
               f"then {series[2]['new_bytes']} bytes new; {info['stats']['file_pages']} file pages)")
        shutil.rmtree(tmpdir)
        n = len(lines_of(out))
        r2 = Run(env, "run2", ckpt, argv, out, "a")
        rc = r2.proc.wait(timeout=60)
    finally:
        del os.environ["TMPDIR"]
    expect(rc == 0 and lines_of(out) == ref,
           f"resumed with its $TMPDIR gone, it ends as an uninterrupted run (exit {rc}, from line "
           f"{n}: {r2.stderr().strip()[-300:]}; {lines_of(out)[-2:]})")


@case
def run_tcp_close(env):
    # snap run --tcp-close: a job holding a TCP connection to a server
    # outside it (this test) is checkpointed (without the option each
    # checkpoint would fail) and stopped; resumed, it finds the connection
    # closed, connects again (tests/programs/tcp_reconnect.py) and finishes
    # with the output of an uninterrupted run.
    srv = PingServer()
    ckpt, out = env.path("ck"), env.path("tcp.out")
    argv = [sys.executable, env.src("tcp_reconnect.py"), str(srv.port), "12"]
    r1 = Run(env, "run1", ckpt, argv, out, extra=["--tcp-close"])
    wait_lines(out, 4)
    r = env.snap_run("checkpoint", "--dir", ckpt, "--wait", "--kill", check=False)
    expect(r.returncode == 0, f"the checkpoint was taken: {r.stderr.strip()}")
    rc = r1.proc.wait(timeout=20)
    expect(rc == 75 and srv.accepted == 1, f"the job was stopped (exit {rc}), one connection so far")
    r2 = Run(env, "run2", ckpt, argv, out, "a", extra=["--tcp-close"])
    rc = r2.proc.wait(timeout=60)
    expect(rc == 0 and lines_of(out) == [f"{i} pong {i}" for i in range(1, 13)],
           f"resumed, it finished as an uninterrupted run (exit {rc}: {r2.stderr().strip()}; "
           f"{lines_of(out)})")
    expect(srv.accepted == 2, f"it connected again after the resume ({srv.accepted} connections)")
    srv.close()


@case
def watch_file(env):
    # touch signal.myfile makes snap watch checkpoint within a second, then
    # the file is gone; with --dir beside snap run, and with --pid.
    ckpt, out = env.path("ck"), env.path("w.out")
    r1 = Run(env, "run1", ckpt, [env.prog("counter"), "60", "100"], out)
    wait_lines(out, 2)
    sig = env.path("signal.myfile")
    w = start([env.snap, "watch", "--file", sig, "--dir", ckpt])
    time.sleep(0.5)
    for n in (1, 2):
        t0 = time.monotonic()
        open(sig, "w").close()
        wait_for(lambda: os.path.exists(os.path.join(ckpt, "latest")) and
                 os.readlink(os.path.join(ckpt, "latest")).split("/")[-1] == str(n)
                 and not os.path.exists(sig), 5, f"checkpoint {n} and the file gone")
        took = time.monotonic() - t0
        expect(took < 1.0, f"touch -> checkpoint {n} safe and file removed in {took:.2f} s")
    kill_everything(r1.proc, r1.err)
    w.wait(timeout=10)
    expect(w.returncode == 0, "snap watch ends with the job")

    p = start([env.prog("counter"), "60", "100"], stdout_path=env.path("p.out"))
    wait_lines(env.path("p.out"), 2)
    img = env.path("img")
    w = start([env.snap, "watch", "--file", sig, "--pid", str(p.pid), "-o", img])
    time.sleep(0.5)
    open(sig, "w").close()
    wait_for(lambda: os.path.exists(os.path.join(img, "manifest.json")) and not os.path.exists(sig),
             5, "the --pid image and the file gone")
    r = env.snap_run("info", img)
    expect(f"process {p.pid}" in r.stdout, "the image holds the watched job")
    p.kill()
    p.wait()
    w.wait(timeout=10)
    expect(w.returncode == 0, "snap watch --pid ends when the job does")


# A job that serves TCP on the side (a Dask scheduler, a monitoring
# endpoint): it listens, accepts (and closes) whatever waits every 5th
# tick, prints ticks 1..30 every 0.5 s. Its port goes to argv[1].
ACCEPTING_JOB = ("import os, socket, sys, time\n"
                 "s = socket.socket()\n"
                 "s.bind(('127.0.0.1', 0))\n"
                 "s.listen(4)\n"
                 "s.setblocking(False)\n"
                 "with open(sys.argv[1] + '.tmp', 'w') as f:\n"
                 "    f.write(str(s.getsockname()[1]))\n"
                 "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
                 "for i in range(1, 31):\n"
                 "    if i % 5 == 0:\n"
                 "        try:\n"
                 "            s.accept()[0].close()\n"
                 "        except BlockingIOError:\n"
                 "            pass\n"
                 "    print(i, flush=True)\n"
                 "    time.sleep(0.5)\n")


@case
def stop_signal_checkpoint_retried(env):
    # The checkpoint on the stop signal (Slurm's, before the time limit:
    # `snap run --on-signal USR1`, as snap slurm runs) is the one that must
    # not be lost to a passing state. Right after the job's accept of tick 5
    # a client connects and leaves: the connection waits to be accepted
    # until tick 10, 2.5 s later, and a checkpoint meanwhile fails (snap
    # cannot save it). snap run tries again 1, then 2 s later: the third
    # try comes after the accept and succeeds, the job is stopped (exit 75),
    # and the same command resumes it to an uninterrupted run's output. The
    # snap before tried once, and the job ran on to its end.
    ckpt, out, port_file = env.path("ck"), env.path("r.out"), env.path("port")
    argv = [sys.executable, "-c", ACCEPTING_JOB, port_file]
    r1 = Run(env, "run1", ckpt, argv, out, extra=["--on-signal", "USR1"])
    wait_lines(out, 5)
    with open(port_file) as f:
        port = int(f.read())
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    c.close()
    r1.proc.send_signal(signal.SIGUSR1)
    try:
        rc = r1.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        rc = None
    err = r1.stderr()
    expect(rc == 75, f"snap run stopped the job after a checkpoint (exit {rc}): {err.strip()[-600:]}")
    expect("wait to be accepted" in err and "trying the checkpoint again in 1 s" in err,
           f"the first try failed on the waiting connection and was tried again: {err.strip()[-600:]}")
    expect(len(lines_of(out)) < 30, f"the job was stopped before its end ({len(lines_of(out))} lines)")
    r2 = Run(env, "run2", ckpt, argv, out, "a")
    rc = r2.proc.wait(timeout=60)
    expect(rc == 0 and lines_of(out) == [str(i) for i in range(1, 31)],
           f"resumed, it ends as an uninterrupted run (exit {rc}: {r2.stderr().strip()[-300:]})")


@case
def srun_refused(env):
    # `snap slurm -- srun PROGRAM` (as `srun` is typed in most batch
    # scripts): srun's tasks run under the node's slurmstepd, not under
    # srun, so a checkpoint would hold srun and none of the work, and fail
    # at the time limit on srun's connections to Slurm. snap run refuses it
    # before anything starts, saying what to do; a dump of a tree with srun
    # in it is refused too, the job left running. (A copy of the counter
    # named srun stands in for it.)
    fake = env.path("bin/srun")
    os.makedirs(os.path.dirname(fake))
    shutil.copy(env.prog("counter"), fake)
    ckpt, out = env.path("ck"), env.path("s.out")
    r = subprocess.run([env.snap, "run", "--dir", ckpt, "--", fake, "30", "100"],
                       stdout=open(out, "w"), stderr=subprocess.PIPE, text=True, timeout=60)
    expect(r.returncode != 0 and "is Slurm's srun" in r.stderr and "srun snap run" in r.stderr,
           f"snap run refuses srun, saying what to do (exit {r.returncode}): {r.stderr.strip()}")
    expect(lines_of(out) == [], "nothing was started")
    p = start([fake, "30", "100"], stdout_path=out)
    wait_lines(out, 2)
    d = env.snap_run("dump", "--pid", str(p.pid), "-o", env.path("d.ckpt"), check=False)
    expect(d.returncode != 0 and f"pid {p.pid} is Slurm's srun" in d.stderr,
           f"snap dump refuses a tree with srun in it: {d.stderr.strip()}")
    n = len(lines_of(out))
    wait_lines(out, n + 2)
    expect(p.poll() is None, "the job runs on")
    p.kill()
    p.wait()


@case
def failed_checkpoint_keeps_previous(env):
    # CKPT on a disk that fills up: the failed checkpoint leaves the job
    # running and the previous checkpoint intact and still `latest`.
    if os.geteuid() != 0:
        raise Skip("mounting a small tmpfs needs root")
    disk = env.path("disk")
    os.mkdir(disk)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", disk], check=True)
    try:
        ckpt, out = os.path.join(disk, "ck"), env.path("f.out")
        prog = ("import os, sys, time\n"
                "keep = []\n"
                "for i in range(1, 41):\n"
                "    print(i, flush=True)\n"
                "    if i == 8: keep.append(os.urandom(24 << 20))\n"
                "    time.sleep(0.1)\n")
        argv = [sys.executable, "-c", prog]
        r1 = Run(env, "run1", ckpt, argv, out)
        wait_lines(out, 3)
        r = env.snap_run("checkpoint", "--dir", ckpt, "--wait")
        wait_lines(out, 10)
        r = env.snap_run("checkpoint", "--dir", ckpt, "--wait", check=False)
        expect(r.returncode == 1 and "No space left" in r.stderr,
               f"the second checkpoint fails: disk full ({r.stderr.strip()})")
        expect(os.readlink(os.path.join(ckpt, "latest")).split("/")[-1] == "1",
               "latest still names checkpoint 1")
        expect(r1.proc.poll() is None, "the job runs on")
        kill_everything(r1.proc, r1.err)
        n = len(lines_of(out))
        r2 = Run(env, "run2", ckpt, argv, out, "a")
        rc = r2.proc.wait(timeout=60)
        expect(rc == 0 and "resumed pid" in r2.stderr(), f"resumed from checkpoint 1 ({r2.stderr().strip()})")
        expect(lines_of(out) == [str(i) for i in range(1, 41)], f"output complete after resuming (was at {n})")
    finally:
        subprocess.run(["umount", "-l", disk], capture_output=True)

def series_info(env, ckpt):
    import json
    r = env.snap_run("info", ckpt, "--json")
    return json.loads(r.stdout)


def checkpoint_rewrite_checkpoint(env, ckpt, out, argv):
    """Starts the rewrite job under snap run, takes checkpoint 1, has the
    job rewrite 1 % of its pages, takes checkpoint 2; returns the Run."""
    r = Run(env, "run1", ckpt, argv, out)
    wait_for(lambda: "ready" in lines_of(out), 60, "the job to fill its memory")
    env.snap_run("checkpoint", "--dir", ckpt, "--wait")
    os.kill(started_pid(r.err), signal.SIGUSR1)
    wait_for(lambda: any(l.startswith("rewrote") for l in lines_of(out)), 20, "the rewrite")
    env.snap_run("checkpoint", "--dir", ckpt, "--wait")
    return r


def memory_checks_out(run, out):
    """Asks the (resumed) rewrite job to check all its memory against the
    checksum it kept; true when it says ok."""
    job = started_pid(run.err)
    n = sum(1 for l in lines_of(out) if l.startswith("verify"))
    os.kill(job, signal.SIGUSR2)
    wait_for(lambda: sum(1 for l in lines_of(out) if l.startswith("verify")) > n, 20,
             "the job's own check")
    return [l for l in lines_of(out) if l.startswith("verify")][-1] == "verify ok"


@case
def incremental_stores_only_changes(env):
    # 64 MiB of random memory; 1 % of its pages rewritten between two
    # checkpoints: the second one finds them with write tracking, stores
    # only them, and the job resumed from it has all its memory right.
    ckpt, out = env.path("ck"), env.path("r.out")
    argv = [env.prog("rewrite"), "64"]
    r1 = checkpoint_rewrite_checkpoint(env, ckpt, out, argv)
    info = series_info(env, ckpt)
    series = {c["number"]: c for c in info["series"]}
    first, second = series[1], series[2]
    print(f"     checkpoint 1: {first['new_bytes']} bytes new; checkpoint 2: "
          f"{second['new_bytes']} bytes new, by {second['changed_pages_by']}")
    expect(first["changed_pages_by"] == "full" and second["changed_pages_by"] == "uffd-wp",
           "the second checkpoint found its changed pages with write tracking")
    expect(first["new_bytes"] >= 64 << 20, "the first checkpoint stored the 64 MiB")
    expect(second["new_bytes"] <= 0.03 * first["new_bytes"],
           f"the second checkpoint added {100 * second['new_bytes'] / first['new_bytes']:.2f} % "
           f"of the first one's bytes (1 % of pages changed; at most 3 %)")
    kill_everything(r1.proc, r1.err)
    r2 = Run(env, "run2", ckpt, argv, out, "a")
    wait_for(lambda: "resumed pid" in r2.stderr(), 30, "the resume")
    expect(memory_checks_out(r2, out), "the job resumed from the incremental checkpoint has all "
                                       "its memory (its own checksum)")
    os.kill(started_pid(r2.err), signal.SIGTERM)
    expect(r2.proc.wait(timeout=20) == 0, "and ends normally")


@case
def killed_while_checkpointing(env):
    # snap run is killed (-9, with its job) at random instants, checkpointing
    # every 0.2 s; each time the same command resumes from `latest`, which
    # must always be a whole checkpoint: the job's memory checks out.
    ckpt, out = env.path("ck"), env.path("k.out")
    argv = [env.prog("rewrite"), "32"]
    rnd = random.Random(1234)
    resumed = 0
    for i in range(20):
        r = Run(env, f"run{i}", ckpt, argv, out, "w" if i == 0 else "a",
                extra=["--interval", "0.2"])
        wait_for(lambda: started_pid(r.err) is not None, 30, "the job to start or resume")
        if i:
            expect("resumed pid" in r.stderr(), f"round {i}: resumed from the latest checkpoint")
            resumed += 1
        job = started_pid(r.err)
        if i == 0:
            wait_for(lambda: "ready" in lines_of(out), 60, "the job to fill its memory")
            wait_for(lambda: checkpoints_made(r) >= 1, 30, "a first checkpoint")
        os.kill(job, signal.SIGUSR1)  # something to write in the next checkpoint
        time.sleep(rnd.uniform(0.05, 0.6))
        kill_everything(r.proc, r.err)
    r = Run(env, "last", ckpt, argv, out, "a")
    wait_for(lambda: "resumed pid" in r.stderr(), 30, "the last resume")
    job = started_pid(r.err)
    expect(memory_checks_out(r, out),
           "after 20 kills the latest checkpoint restores a job whose memory checks out")
    leftovers = [d for d in os.listdir(ckpt) if ".tmp-" in d]
    os.kill(job, signal.SIGTERM)
    r.proc.wait(timeout=20)
    print(f"     {resumed} resumes; leftovers of killed writers now: {leftovers}")
    info = series_info(env, ckpt)
    expect(all(c["complete"] for c in info["series"]) and len(info["series"]) <= 2,
           f"the series holds only complete checkpoints, at most --keep 2 "
           f"({[(c['number'], c['complete']) for c in info['series']]})")


@case
def damaged_newest_falls_back(env):
    # The newest checkpoint's page data is damaged (a flipped byte): snap run
    # says so and resumes from the one before; the job continues correctly.
    ckpt, out = env.path("ck"), env.path("d.out")
    argv = [env.prog("rewrite"), "16"]
    r1 = checkpoint_rewrite_checkpoint(env, ckpt, out, argv)
    kill_everything(r1.proc, r1.err)
    pack = os.path.join(ckpt, "packs", "2.pack")
    with open(pack, "r+b") as f:
        f.seek(os.path.getsize(pack) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xff]))
    r2 = Run(env, "run2", ckpt, argv, out, "a")
    wait_for(lambda: "resumed pid" in r2.stderr(), 30, "the resume")
    err = r2.stderr()
    expect("is damaged" in err and re.search(r"resumed pid \d+ from .*/1 ", err),
           f"checkpoint 2 is skipped with a warning, the job resumes from 1: {err.strip()}")
    expect(memory_checks_out(r2, out), "its memory checks out")
    os.kill(started_pid(r2.err), signal.SIGTERM)
    r2.proc.wait(timeout=20)


if __name__ == "__main__":
    main()
