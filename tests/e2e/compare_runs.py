"""What the end-to-end tests of restore share: a run that is dumped with
--kill, restored and compared with an uninterrupted run of the same program."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from snaptest import (expect, lines_of, start, wait_for, wait_lines)


def reap_killed_children(timeout=5.0):
    """Collects the job's other processes, killed by the dump, that came to
    us (the subreaper) when their parent died, so that their pids are free."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.02)


def dump_kill_restore(env, argv, name, after_lines, expected, stdin_path=None,
                      timeout=120, ignore=lambda line: False, environ=None, tree=False,
                      restore_said=None):
    """Runs argv with stdout to a file, dumps it with --kill once it printed
    after_lines lines, restores it and checks the whole output file. `tree`:
    the job has children, reaped (this test is their subreaper) before the
    restore needs their pids. `restore_said`: the restore runs with -v, and
    this is called with what it printed on stderr (to check how it
    restored)."""
    out = env.path(f"{name}.out")
    ckpt = env.path(f"{name}.ckpt")
    p = start(argv, stdout_path=out, stdin_path=stdin_path, env=environ)
    wait_lines(out, after_lines)
    env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
    p.wait()
    expect(p.returncode == -9, f"{name}: the original was killed by the dump")
    reap_killed_children()
    if tree:
        def all_reaped():
            try:
                return os.waitpid(-1, os.WNOHANG)[0] < 0
            except ChildProcessError:
                return True
        wait_for(all_reaped, 30, "the killed job's children to be reaped")
    before = lines_of(out)
    expect(len(before) < len(expected), f"{name}: killed mid-run ({len(before)} lines)")
    verbose = ["-v"] if restore_said else []
    r = env.snap_run("restore", *verbose, ckpt, timeout=timeout, check=False)
    expect(r.returncode == 0, f"{name}: restored job exited 0 (got {r.returncode}; {r.stderr.strip()})")
    expect_continued(name, before, [l for l in lines_of(out) if not ignore(l)], expected)
    if restore_said:
        restore_said(r.stderr)


def expect_continued(name, before, got, expected, what="output identical"):
    """The restored job's output `got` (its lines before the dump: `before`)
    must be `expected`, an uninterrupted run's."""
    if got != expected:
        raise AssertionError(f"{name}: output differs from an uninterrupted run\n"
                             f"before restore: {before}\nafter: {got}\nexpected: {expected}")
    print(f"ok   {name}: continued from line {len(before)} to {len(got)}, {what}")


def uninterrupted(argv, timeout=60, environ=None):
    """An uninterrupted run of argv: (exit status, its stdout lines), what a
    restored run's output is compared with."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=environ)
    return r.returncode, r.stdout.splitlines()


def digest_job_started(env, name, argv, steps):
    """A job that prints "step N digest X" for each of its `steps` steps
    (memory_churn.c, arenas.c): its uninterrupted run, then the same job
    started with its output in a file, past its 10th step. Returns (the
    job, its output file, a checkpoint path for it, the uninterrupted
    run's lines)."""
    status, expected = uninterrupted(argv)
    expect(status == 0 and len(expected) == steps and
           expected[-1].startswith(f"step {steps} digest "),
           f"an uninterrupted run ({status}, {expected[-1:]})")
    out, ckpt = env.path(f"{name}.out"), env.path(f"{name}.ckpt")
    p = start(argv, stdout_path=out)
    wait_lines(out, 10)
    return p, out, ckpt, expected


def ran_on_to_its_end(p, out, expected, timeout=120):
    """The job p (its stdout in out), left running by a dump that failed or
    was stopped, runs on to its end printing `expected`."""
    p.wait(timeout=timeout)
    expect(p.returncode == 0 and lines_of(out) == expected,
           f"the job ran on to its end, as an uninterrupted run (exit {p.returncode}, "
           f"{lines_of(out)[-2:]})")


def runs_on_then_restores(env, p, out, ckpt, expected):
    """After a dump that let the job run on: the job (p, its stdout in out)
    runs to its end printing `expected`, then the image ckpt restores and
    the job, continuing from the dump point, ends with `expected` again."""
    p.wait()
    expect(p.returncode == 0 and lines_of(out) == expected,
           f"the job ran on to its end after the dump (exit {p.returncode}, {lines_of(out)[-3:]})")
    r = env.snap_run("restore", ckpt, check=False, timeout=120)
    expect(r.returncode == 0 and lines_of(out) == expected,
           f"restored from the dump point, it ends as an uninterrupted run (exit {r.returncode}, "
           f"{r.stderr.strip()}; {lines_of(out)[-3:]})")
