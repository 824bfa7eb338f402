#!/usr/bin/env python3
"""snap restore of process trees, end to end (issue #9): real jobs of several
processes are dumped with --kill at two or more points of their run,
restored, and must finish with output byte-identical to an uninterrupted run
(and the restored root's exit status). Each point is an independent run: a
failure at one point is recorded and the next point still runs; the case
fails at the end if any point failed.
Usage: tree_test.py SNAP PROGRAMS_BUILD PROGRAMS_SRC CASE"""
import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from snaptest import (Skip, case, expect, lines_of, live_pid, main, reap_orphans, start,
                      wait_for, wait_lines)

# Every job runs with the same environment, in the C locale (sort, bc).
JOB_ENV = dict(os.environ, LC_ALL="C", LANG="C")

NL = b"\n"
LOOP = "for i in $(seq 1 60); do echo line $i; sleep 0.1; done"


# --- what a run leaves behind ------------------------------------------------

def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def stdout_only(d):
    """The job's stdout (and stderr: the same file) in run directory d."""
    return {"stdout": read_bytes(os.path.join(d, "out"))}


def tree_pids(root):
    """root and all its descendants, from /proc/PID/task/TID/children."""
    seen, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        if pid in seen:
            continue
        seen.append(pid)
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return seen


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):  # it ended, or ends while read
        return "?"


def exists(pid):
    """A process (even a zombie) holds this pid."""
    return os.path.exists(f"/proc/{pid}")


def all_gone(pids):
    reap_orphans()  # killed descendants come to us, the subreaper
    return not any(exists(p) for p in pids)


def ours(pid):
    """pid is a descendant of this test (a restored process under snap
    restore, or an orphan reparented to us, the subreaper), so that cleaning
    up never hits an unrelated process that reused a pid."""
    me = os.getpid()
    for _ in range(64):
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            return False
        if pid == me:
            return True
        if pid <= 1:
            return False
    return False


def kill_leftovers(pids):
    pids = [p for p in pids if ours(p)]
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        wait_for(lambda: all_gone(pids), 10, "leftover processes to end")
    except AssertionError as e:
        print(f"warning: {e}")


def image_processes(env, ckpt):
    """The processes of an image, root first (src/image/FORMAT.md)."""
    return env.manifest(ckpt)["checkpoint"]["processes"]


def image_pids(env, ckpt):
    return [p["pid"] for p in image_processes(env, ckpt)]


def describe_outputs(outs):
    stdout = outs.get("stdout") or b""
    parts = [f"stdout {len(stdout)} bytes, {stdout.count(NL)} lines"]
    files = [k for k in outs if k != "stdout" and outs[k] is not None]
    if files:
        parts.append(f"{len(files)} other files")
    return ", ".join(parts)


def first_difference(got, want):
    lines = []
    for k in sorted(set(got) | set(want)):
        g, w = got.get(k), want.get(k)
        if g == w:
            continue
        if g is None or w is None:
            lines.append(f"  {k}: {'missing' if g is None else 'present'} after restore, "
                         f"{'missing' if w is None else 'present'} in the reference")
        else:
            i = next((i for i in range(min(len(g), len(w))) if g[i] != w[i]), min(len(g), len(w)))
            lines.append(f"  {k}: {len(g)} bytes, reference {len(w)}; first difference at byte {i}:"
                         f"\n    got  {g[max(0, i - 60):i + 60]!r}\n    want {w[max(0, i - 60):i + 60]!r}")
        if len(lines) >= 5:
            lines.append("  ...")
            break
    return "\n".join(lines)


# --- the shared helper ---------------------------------------------------------

def reference_run(env, name, argv, collect=stdout_only, setup=None, timeout=120):
    """Runs argv uninterrupted (stdin /dev/null, stdout+stderr to a file in a
    fresh directory, which is also its cwd); returns (status, outputs, seconds)."""
    d = env.path(f"{name}-reference")
    os.mkdir(d)
    if setup:
        setup(d)
    t0 = time.monotonic()
    with open(os.path.join(d, "out"), "w") as out:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                           cwd=d, env=JOB_ENV, timeout=timeout)
    secs = time.monotonic() - t0
    outs = collect(d)
    print(f"reference {name}: exit {p.returncode} after {secs:.2f} s, {describe_outputs(outs)}")
    return p.returncode, outs, secs


class Point:
    """Where to dump: `reached(d, t)` is true once the job in run directory d,
    started t seconds ago, got there; `label` says where that is."""
    def __init__(self, label, reached):
        self.label = label
        self.reached = reached


def after_lines(n):
    return Point(f"after {n} lines", lambda d, t: len(lines_of(os.path.join(d, "out"))) >= n)


def after_seconds(s):
    return Point(f"{s:.2f} s in", lambda d, t: t >= s)


def dump_restore_at(env, name, argv, point, want_status, want, collect=stdout_only, setup=None,
                    check_image=None, restore_timeout=120, reach_timeout=60, before_restore=None):
    """One run: start argv in a fresh directory, dump it with --kill at
    `point`, check the whole original tree is gone, restore it in the
    foreground (`before_restore()` called first, if any), and compare its
    exit status and every output with the reference (`want`, from
    collect())."""
    d = env.path(f"{name}-{re.sub(r'[^a-z0-9]+', '_', point.label)}")
    os.mkdir(d)
    if setup:
        setup(d)
    t0 = time.monotonic()
    p = start(argv, stdout_path=os.path.join(d, "out"), cwd=d, env=JOB_ENV)
    wait_for(lambda: p.poll() is not None or point.reached(d, time.monotonic() - t0),
             reach_timeout, f"{name} to get {point.label}")
    expect(p.poll() is None, f"{name} {point.label}: the job is still running "
                             f"({time.monotonic() - t0:.2f} s in)")
    tree = tree_pids(p.pid)
    print(f"     dumping {name} {point.label}: pid {p.pid}, tree of {len(tree)}: "
          + " ".join(f"{pid}:{comm(pid)}" for pid in tree))
    ckpt = os.path.join(d, "ckpt")
    r = env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
    print(f"     {r.stderr.strip()}")
    p.wait(timeout=10)
    expect(p.returncode == -signal.SIGKILL, f"{name} {point.label}: the dump killed the root")
    procs = image_processes(env, ckpt)
    pids = [q["pid"] for q in procs]
    if check_image:
        check_image(procs)
    expect(pids[0] == p.pid and len(pids) >= 2,
           f"{name} {point.label}: the image holds the tree from the root down ({len(pids)} processes)")
    wait_for(lambda: all_gone(set(pids) | set(tree)), 10, "the original tree to be gone")
    print(f"ok   {name} {point.label}: no process of the original tree is left")

    # The job was stopped mid-run: what it had written is a strict beginning
    # of the reference output.
    before = collect(d)
    partial = all(v is None or (want.get(k) is not None and want[k].startswith(v))
                  for k, v in before.items())
    unfinished = before != want
    expect(partial and unfinished,
           f"{name} {point.label}: stopped mid-run, its outputs a strict beginning of the "
           f"reference ({describe_outputs(before)})")

    if before_restore:
        before_restore()
    try:
        r = env.snap_run("restore", ckpt, timeout=restore_timeout, check=False,
                         stdin=subprocess.DEVNULL)
    finally:
        kill_leftovers(pids)
    print(f"     snap restore exited {r.returncode}; stderr: {r.stderr.strip()!r}")
    got = collect(d)
    same = got == want
    diff = "" if same else ("; outputs differ from an uninterrupted run:\n"
                            + first_difference(got, want))
    expect(r.returncode == want_status,
           f"{name} {point.label}: the restored job exited {want_status} (got {r.returncode}){diff}")
    if not same:
        raise AssertionError(f"{name} {point.label}{diff}")
    print(f"ok   {name} {point.label}: continued from ({describe_outputs(before)}) to "
          f"({describe_outputs(got)}), byte-identical to the reference")


def dump_restore_points(env, name, argv, points, want_status, want, **kw):
    """dump_restore_at for each point; every point runs even if one fails."""
    expect(len(points) >= 2, f"{name}: {len(points)} dump points")
    failed = []
    for point in points:
        try:
            dump_restore_at(env, name, argv, point, want_status, want, **kw)
        except (AssertionError, subprocess.TimeoutExpired) as e:
            print(f"FAIL {e}")
            failed.append(f"{point.label}: {str(e).splitlines()[0]}")
    if failed:
        raise AssertionError(f"{name}: {len(failed)} of {len(points)} dump points failed:\n  "
                             + "\n  ".join(failed))


def need(tool):
    if not shutil.which(tool):
        raise Skip(f"{tool} is not installed")


# --- cases -----------------------------------------------------------------------

@case
def pipeline_sha256sum(env):
    # bash -> (subshell running the loop -> sleep), sha256sum: nothing is
    # printed before the end, so the points are times.
    need("sha256sum")
    argv = ["bash", "-c", f"{LOOP} | sha256sum"]
    status, want, secs = reference_run(env, "sha256", argv)
    expect(want["stdout"] == hashlib.sha256("".join(f"line {i}\n" for i in range(1, 61)).encode())
           .hexdigest().encode() + b"  -\n", "the reference is the sha256 of lines 1..60")
    dump_restore_points(env, "sha256", argv, [after_seconds(0.2 * secs), after_seconds(0.7 * secs)],
                        status, want)


@case
def pipeline_sort(env):
    # Three stages: the loop, sort (holds everything until its input ends),
    # cat -n.
    need("sort")
    argv = ["bash", "-c", f"{LOOP} | sort -k2,2nr | cat -n"]
    status, want, secs = reference_run(env, "sort", argv)
    expect(want["stdout"].startswith(b"     1\tline 60\n") and want["stdout"].count(b"\n") == 60,
           "the reference holds lines 60..1")
    dump_restore_points(env, "sort", argv, [after_seconds(0.2 * secs), after_seconds(0.7 * secs)],
                        status, want)


@case
def bc_pi(env):
    need("bc")
    argv = ["bash", "-c", "echo 'scale=2000; 4*a(1)' | bc -l"]
    status, want, secs = reference_run(env, "bc", argv)
    expect(want["stdout"].startswith(b"3.14159") and len(want["stdout"]) > 2000,
           "the reference holds 2000 digits of pi")
    dump_restore_points(env, "bc", argv, [after_seconds(0.2 * secs), after_seconds(0.5 * secs)],
                        status, want)


@case
def python_pool(env):
    probe = subprocess.run([sys.executable, "-c", "import multiprocessing, multiprocessing.pool"],
                           capture_output=True)
    if probe.returncode != 0:
        raise Skip(f"python3 multiprocessing is not usable here: {probe.stderr.decode().strip()}")
    argv = [sys.executable, env.src("pool_job.py"), "60", "100"]
    status, want, secs = reference_run(env, "pool", argv)
    expect(want["stdout"].endswith(b"pool done\n") and want["stdout"].count(b"\n") == 61,
           "the reference holds 60 results in order")
    dump_restore_points(env, "pool", argv, [after_lines(10), after_lines(45)], status, want)


@case
def python_manager(env):
    # A multiprocessing.Manager (tests/programs/manager_job.py): its server
    # process listens on a unix socket in a directory under $TMPDIR, here a
    # directory of the test's, which is removed before each restore, as on
    # another node or after a site's cleanup: the restore makes the
    # directory chain again, the socket binds there, and the job ends as
    # an uninterrupted run (and removes it).
    tmpdir = env.path("manager-tmp")
    argv = ["env", f"TMPDIR={tmpdir}", sys.executable, env.src("manager_job.py"), "40", "100"]

    def fresh_tmpdir(d=None):
        shutil.rmtree(tmpdir, ignore_errors=True)
        os.mkdir(tmpdir)

    status, want, secs = reference_run(env, "manager", argv, setup=fresh_tmpdir)
    expect(status == 0 and want["stdout"].endswith(b"40 1600 22140\nmanager done\n"),
           "the reference ran its 40 items")

    def remove_tmpdir():
        print(f"     removed $TMPDIR: {sorted(os.listdir(tmpdir))}")
        shutil.rmtree(tmpdir)

    dump_restore_points(env, "manager", argv, [after_lines(8), after_lines(25)], status, want,
                        setup=fresh_tmpdir, before_restore=remove_tmpdir)


@case
def proc_fds(env):
    # fds on /proc/PID files of the job's own processes and threads
    # (tests/programs/proc_fds.py: its own stat, opened as /proc/self/stat
    # before the fork, so that its child shares it; its child's status and
    # the stat of the child's second thread; its own second thread's status
    # and stat, opened as /proc/thread-self/status and /proc/TID/stat: a
    # thread's exist again only once the restore has made that thread, the
    # child's before the parent opens it) come back on the same processes'
    # and threads' files, the stat's offset kept: as an ordinary user the
    # restore runs in a pid namespace with its own /proc.
    argv = [sys.executable, env.src("proc_fds.py"), "30", "100"]
    status, want, secs = reference_run(env, "procfds", argv)
    expect(status == 0 and want["stdout"].count(b"own stat True child status True child thread "
                                                b"stat True thread status True thread stat "
                                                b"True") == 30,
           "the reference read the five files right each time")
    dump_restore_points(env, "procfds", argv, [after_lines(5), after_lines(20)], status, want)


@case
def pidfds_on_descendants(env):
    # A parent holding pidfds on its child and its grandchild (as asyncio's
    # pidfd child watcher does; tests/programs/pidfd_tree.py): restored,
    # they lead to the same processes again (the grandchild, made beside
    # the parent by its child, is waited for before the parent's pidfd on
    # it is opened), which run, and end when signalled through the pidfd.
    argv = [sys.executable, env.src("pidfd_tree.py"), "30", "100"]
    status, want, secs = reference_run(env, "pidfds", argv)
    expect(status == 0 and want["stdout"].count(b"child runs True grandchild runs True") == 30
           and b"grandchild ended True" in want["stdout"],
           "the reference saw both run, then end")
    dump_restore_points(env, "pidfds", argv, [after_lines(5), after_lines(20)], status, want)


@case
def cow_shared_memory(env):
    # A parent that fills 32 MiB, then forks 3 workers that read it (a pool
    # forked after loading its data; tests/programs/cow_pool.c): each
    # process checks every step that it still shares most of the data
    # copy-on-write (the region's Private_Dirty under a quarter of it), and
    # prints "shared 1" if so. Restored, the data is one copy again, not
    # four: the parent's skeleton holds it before it forks the workers.
    argv = [env.prog("cow_pool"), "40", "100", "32"]
    status, want, secs = reference_run(env, "cow", argv)
    expect(status == 0 and want["stdout"].count(b"shared 1 1 1 1\n") == 40
           and want["stdout"].endswith(b"done\n"), "the reference shared its data every step")
    dump_restore_points(env, "cow", argv, [after_lines(5), after_lines(25)], status, want)


@case
def mpi_ring(env):
    # Open MPI's mpirun and two ranks (sockets between mpirun and the ranks,
    # shared memory in /dev/shm between the ranks, a deleted file opened
    # O_NOFOLLOW in each, PMIx's data stores mapped from its session
    # directory in the temporary directory), dumped at two points; before
    # each restore the job's segments in /dev/shm and its session directory
    # are removed, as a site's cleanup after a job does, or as on another
    # node (the image holds what the job held of them).
    if not os.path.exists(env.prog("mpi_ring")) or not shutil.which("mpirun"):
        raise Skip("no MPI here (Open MPI's mpicc and mpirun: scripts/setup installs them)")
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    argv = ["mpirun", *root, "--oversubscribe", "-np", "2", env.prog("mpi_ring"), "40"]
    status, want, secs = reference_run(env, "mpi", argv)
    expect(status == 0 and want["stdout"].startswith(b"step 1 token 2 sum 97\n") and
           want["stdout"].endswith(b"done\n"), "the reference ran its 40 steps")
    before = set(os.listdir("/dev/shm"))
    sessions = os.path.join(os.environ.get("TMPDIR") or "/tmp", "ompi.*", "pid.*")
    sessions_before = set(glob.glob(sessions))

    def clean_dev_shm():
        gone = sorted(set(os.listdir("/dev/shm")) - before)
        for f in gone:
            os.unlink(os.path.join("/dev/shm", f))
        print(f"     removed from /dev/shm: {gone}")
        session = sorted(set(glob.glob(sessions)) - sessions_before)
        for d in session:
            shutil.rmtree(d)
        print(f"     removed the session directory: {session}")

    dump_restore_points(env, "mpi", argv, [after_lines(8), after_lines(25)], status, want,
                        before_restore=clean_dev_shm)


MAKE_TARGETS = 300


def write_makefile(d):
    with open(os.path.join(d, "Makefile"), "w") as f:
        f.write("all: " + " ".join(f"o{n}" for n in range(1, MAKE_TARGETS + 1)) + "\n")
        for n in range(1, MAKE_TARGETS + 1):
            f.write(f"o{n}: ; sleep 0.05; echo {n} | sha1sum > o{n}\n")


def make_outputs(d):
    outs = stdout_only(d)
    for name in os.listdir(d):
        if re.fullmatch(r"o\d+", name):
            outs[name] = read_bytes(os.path.join(d, name))
    return outs


def made_files(n):
    def reached(d, t):
        return sum(1 for name in os.listdir(d) if re.fullmatch(r"o\d+", name)) >= n
    return Point(f"after {n} files", reached)


@case
def make_j2(env):
    need("make")
    need("sha1sum")
    # The reference is computed: make echoes each recipe as it starts it,
    # in the order of `all`'s prerequisites; oN holds sha1("N\n").
    want = {"stdout": "".join(f"sleep 0.05; echo {n} | sha1sum > o{n}\n"
                              for n in range(1, MAKE_TARGETS + 1)).encode()}
    for n in range(1, MAKE_TARGETS + 1):
        want[f"o{n}"] = hashlib.sha1(f"{n}\n".encode()).hexdigest().encode() + b"  -\n"
    argv = ["make", "-j2"]
    dump_restore_points(env, "make", argv, [made_files(60), made_files(220)], 0, want,
                        collect=make_outputs, setup=write_makefile, restore_timeout=180)


def family_outputs(d):
    outs = stdout_only(d)
    outs["family.log"] = read_bytes(os.path.join(d, "family.log"))
    return outs


@case
def family(env):
    # socketpair, MAP_SHARED counter, one file description shared by parent
    # and child (tests/programs/family.c); its own verdict is the last line.
    argv = [env.prog("family"), "40", "50", "family.log"]
    status, want, secs = reference_run(env, "family", argv, collect=family_outputs)
    expect(status == 0 and want["stdout"].endswith(b"verdict PASS\n"),
           "an uninterrupted family run passes its own checks")
    dump_restore_points(env, "family", argv, [after_lines(10), after_lines(60)], status, want,
                        collect=family_outputs)


@case
def zombie(env):
    # Children ended but unreaped at the dump; reaped after the restore
    # with their pids and statuses (tests/programs/zombie.c), two of them
    # in other process groups: a live child's, and one whose leader is gone
    # (a restore that made that group only in the group's own process could
    # let the zombie end before it existed, in its parent's group).
    argv = [env.prog("zombie"), "30", "100"]
    status, want, secs = reference_run(env, "zombie", argv)
    out = want["stdout"].decode()
    expect(status == 0 and "same pid yes, exited 42" in out
           and "same pid yes, killed by signal 10" in out and "no other child: yes" in out
           and "zombie in a live child's group: yes" in out
           and "zombie in a group whose leader is gone: yes" in out,
           "an uninterrupted zombie run reaps its children with their statuses and groups")

    def four_zombies(procs):
        zombies = [q for q in procs if q.get("zombie")]
        statuses = sorted(q.get("exit_status") for q in zombies)
        expect(statuses == [signal.SIGUSR1, 7 << 8, 9 << 8, 42 << 8],
               f"the image records the unreaped children as zombies with their wait statuses "
               f"(found {len(zombies)} zombies, statuses {statuses})")

    dump_restore_points(env, "zombie", argv, [after_lines(5), after_lines(25)], status, want,
                        check_image=four_zombies)


@case
def stopped_child(env):
    # A child stopped by job control (it raised SIGSTOP; its parent saw the
    # stop) comes back stopped, not running: the parent finds it still
    # stopped halfway, then continues it with SIGCONT and reaps it
    # (tests/programs/stopped_child.c).
    argv = [env.prog("stopped_child"), "30", "100"]
    status, want, secs = reference_run(env, "stopped_child", argv)
    out = want["stdout"].decode()
    expect(status == 0 and "child still stopped: yes" in out
           and out.endswith("child: continued\nchild exited 7\n"),
           "an uninterrupted run keeps its child stopped until SIGCONT")

    def child_stopped(procs):
        stops = sorted(q.get("stop_signal", 0) for q in procs)
        expect(stops == [0, signal.SIGSTOP],
               f"the image records the child as stopped by SIGSTOP, the parent as running "
               f"(stop signals {stops})")

    dump_restore_points(env, "stopped_child", argv, [after_lines(3), after_lines(12)], status, want,
                        check_image=child_stopped)


@case
def shell_jobs(env):
    # A session with two process groups, one without its leader, under a
    # subreaper root (tests/programs/jobs.c).
    argv = [env.prog("jobs"), "30", "100"]
    status, want, secs = reference_run(env, "jobs", argv)
    out = want["stdout"].decode()
    expect(status == 0 and "NO" not in out and out.endswith("reaped 3 workers, all exited 0 yes\n"),
           "an uninterrupted jobs run passes its own checks")
    dump_restore_points(env, "jobs", argv, [after_lines(10), after_lines(70)], status, want)


@case
def daemon_session(env):
    # Under a subreaper root (tests/programs/daemon_tree.py): a daemon
    # started the classic way (fork, setsid, fork, the session's leader
    # exits) and its child, in a session and group without a leader; and a
    # worker given to the root when its parent ended, in the session of a
    # leader that lives. For the first a helper takes the session's id and
    # forks the daemon as the root's child, then ends; the leader forks the
    # second as the root's child. Each says its session and group are the
    # ones it started in, and whether their leader is there; the output is
    # an uninterrupted run's (the snap before refused both restores).
    argv = [sys.executable, env.src("daemon_tree.py"), "20", "0.1"]
    status, want, secs = reference_run(env, "daemon_tree", argv)
    out = want["stdout"].decode()
    expect(status == 0 and "kept=False" not in out and "session=False" not in out
           and out.count("leader-gone=True") == 40 and out.count("leader-gone=False") == 40
           and out.endswith("done\n"),
           f"an uninterrupted run passes its own checks: {out[-300:]!r}")
    dump_restore_points(env, "daemon_tree", argv, [after_lines(3), after_lines(12)], status, want)


@case
def restored_tree_again(env):
    # A restored tree is dumped and restored again: family.c (socket pair,
    # shared memory and shared file offset) through two dump/restore cycles.
    argv = [env.prog("family"), "40", "50", "family.log"]
    status, want, secs = reference_run(env, "family", argv, collect=family_outputs)
    d = env.path("family-twice")
    os.mkdir(d)
    out = os.path.join(d, "out")
    p = start(argv, stdout_path=out, cwd=d, env=JOB_ENV)
    wait_lines(out, 10)
    ckpt1, ckpt2 = os.path.join(d, "ckpt1"), os.path.join(d, "ckpt2")
    env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt1)
    p.wait(timeout=10)
    pids = image_pids(env, ckpt1)
    wait_for(lambda: all_gone(pids), 10, "the original tree to be gone")
    # First restore in the background; dump what it brought back.
    r1 = start([env.snap, "restore", ckpt1], cwd=d)
    try:
        wait_lines(out, 50)
        expect(r1.poll() is None and all(exists(live_pid(q)) for q in image_pids(env, ckpt1)),
               "the restored tree runs with its saved pids")
        env.snap_run("dump", "--kill", "--pid", str(live_pid(p.pid)), "-o", ckpt2)
        r1.wait(timeout=20)
        expect(r1.returncode == 128 + signal.SIGKILL,
               f"the first snap restore ends with its job, killed by the second dump "
               f"(exit {r1.returncode})")
        expect(sorted(image_pids(env, ckpt2)) == sorted(pids),
               "the second image holds the same processes")
        def reaped():  # orphans of the killed tree come to this test (a subreaper)
            reap_orphans()
            return not any(os.path.exists(f"/proc/{q}") for q in pids)
        wait_for(reaped, 10, "the restored tree to be gone")
        before = family_outputs(d)
        expect(before != want, "the job was stopped mid-run again")
        r = env.snap_run("restore", ckpt2, timeout=120, check=False, stdin=subprocess.DEVNULL)
    finally:
        kill_leftovers(pids)
    got = family_outputs(d)
    expect(r.returncode == status, f"the twice-restored job exited {status} (got {r.returncode}; "
                                   f"{r.stderr.strip()})")
    if got != want:
        raise AssertionError("outputs differ from an uninterrupted run:\n" + first_difference(got, want))
    print("ok   dump, restore, dump, restore: output byte-identical to an uninterrupted run")


@case
def pids_taken(env):
    # An image whose pids are partly taken is refused before anything is
    # created, naming each taken pid and its holder.
    if os.geteuid() != 0:
        raise Skip("taking chosen pids (clone3 set_tid) needs root")
    d = env.path("taken")
    os.mkdir(d)
    out = os.path.join(d, "out")
    p = start([env.prog("jobs"), "300", "100"], stdout_path=out, cwd=d, env=JOB_ENV)
    wait_for(lambda: len(lines_of(out)) >= 8, 30, "8 lines from jobs")
    tree = tree_pids(p.pid)
    ckpt = os.path.join(d, "ckpt")
    env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
    p.wait(timeout=10)
    pids = image_pids(env, ckpt)
    expect(len(pids) == 4 and pids[0] == p.pid, f"the image holds the root and 3 workers: {pids}")
    wait_for(lambda: all_gone(set(pids) | set(tree)), 10, "the original tree to be gone")
    # Take two pids that are not the root's, so a restore that checks only
    # as it goes would already have created the root.
    taken = [pids[1], pids[-1]]
    free = [pid for pid in pids if pid not in taken]
    holder = subprocess.Popen([env.prog("take_pid"), *map(str, taken)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in holder.stdout:
            lines.append(line.strip())
            if line.strip() == "ready":
                break
        if lines[-1:] != ["ready"]:
            holder.wait(timeout=10)
            raise AssertionError(f"take_pid could not take {taken}: {holder.stderr.read().strip()}")
        expect(all(exists(t) and comm(t) == "take_pid" for t in taken),
               f"pids {taken} are held by take_pid")
        output_before = read_bytes(out)

        # Watch the free pids while snap restore runs: none may appear, not
        # even for a moment (best effort: polled as fast as Python can).
        seen = set()
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                for pid in free:
                    if os.path.exists(f"/proc/{pid}"):
                        seen.add(pid)
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            r = env.snap_run("restore", ckpt, check=False, timeout=60, stdin=subprocess.DEVNULL)
        finally:
            stop.set()
            watcher.join()
        print(f"     snap restore exited {r.returncode}; stderr: {r.stderr.strip()!r}")
        expect(r.returncode == 1, f"the restore is refused with exit 1 (got {r.returncode})")
        for t in taken:
            expect(re.search(rf"\bpid {t}\b[^\n]*take_pid", r.stderr) is not None,
                   f"the message names taken pid {t} and its holder take_pid")
        expect(not seen, f"no process of the image was created, even briefly (seen: {sorted(seen)})")
        expect(not any(exists(pid) for pid in free), f"none of the free pids {free} is in use")
        expect(read_bytes(out) == output_before, "the job's output file did not change")
        expect(all(exists(t) and comm(t) == "take_pid" for t in taken),
               "the holders of the taken pids were left alone")
    finally:
        holder.kill()
        holder.wait()
        kill_leftovers(pids)

def flip_byte_in_last_block(pages):
    """Flips a byte in the stored data of the last block of pages.bin, found
    by the last entry of pages.idx beside it (src/image/FORMAT.md, version 7:
    a 32-byte header, then 24-byte entries with the offset first)."""
    with open(pages[:-len("bin")] + "idx", "rb") as f:
        idx = f.read()
    last = int.from_bytes(idx[len(idx) - 24:len(idx) - 16], "little")
    with open(pages, "r+b") as f:
        f.seek(last + 7)
        b = f.read(1)
        f.seek(last + 7)
        f.write(bytes([b[0] ^ 0x10]))


# A parent and a child with 4 MiB of random data each: the child's come
# last in the image, so a damaged last block is found once the parent's
# memory is filled.
TWO_WITH_DATA = """
import os, time
mine = os.urandom(4 << 20)
if os.fork() == 0:
    mine = os.urandom(4 << 20)
    while True:
        time.sleep(0.1)
i = 0
while True:
    print(i, flush=True)
    i += 1
    time.sleep(0.05)
"""


@case
def damaged_block_kills_the_half_built_tree(env):
    # Memory pages are checked block by block as restore fills the
    # processes: damage in the last block is found once every process of
    # the tree exists and the first is filled. The restore fails naming the
    # block, and every process it created is gone without having run.
    d = env.path("damaged")
    os.mkdir(d)
    out = os.path.join(d, "out")
    p = start([sys.executable, "-c", TWO_WITH_DATA], stdout_path=out, cwd=d, env=JOB_ENV)
    wait_lines(out, 5)
    ckpt = os.path.join(d, "ckpt")
    env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
    p.wait(timeout=10)
    pids = image_pids(env, ckpt)
    expect(len(pids) == 2, f"the image holds the parent and the child: {pids}")
    wait_for(lambda: all_gone(pids), 10, "the original tree to be gone")
    flip_byte_in_last_block(os.path.join(ckpt, "pages.bin"))
    before = read_bytes(out)
    try:
        r = env.snap_run("restore", "-v", ckpt, check=False, timeout=60,
                         stdin=subprocess.DEVNULL)
        err = r.stderr.strip()
        expect(r.returncode == 1, f"the damaged image is refused with exit 1 (got {r.returncode})")
        expect(re.search(r"pages\.bin: block \d+ \(offset \d+\): checksum mismatch", err),
               f"the message names the damaged block: {err.splitlines()[-2:]}")
        filled = re.findall(r"restore: pid \d+: \d+ MiB written", err)
        expect(len(filled) == 1, f"the parent was filled before the damage was found: {filled}")
        if os.geteuid() == 0:  # the saved pids are the host's
            wait_for(lambda: all_gone(pids), 10, "every process restore created to be gone")
        time.sleep(0.5)
        expect(read_bytes(out) == before, "no process of the job ran (its output did not move)")
    finally:
        kill_leftovers(pids)

if __name__ == "__main__":
    main()
