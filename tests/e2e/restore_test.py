#!/usr/bin/env python3
"""snap restore, end to end: real programs are dumped with --kill in the
middle of their run, restored, and must finish with exactly the output of an
uninterrupted run. Usage: restore_test.py SNAP PROGRAMS_BUILD PROGRAMS_SRC CASE"""
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from snaptest import (Skip, case, expect, lines_of, live_pid, main, pid_alive, reap_orphans,
                      start, start_job, wait_for, wait_lines)


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
                      timeout=120, ignore=lambda line: False, environ=None, tree=False):
    """Runs argv with stdout to a file, dumps it with --kill once it printed
    after_lines lines, restores it and checks the whole output file. `tree`:
    the job has children, reaped (this test is their subreaper) before the
    restore needs their pids."""
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
    r = env.snap_run("restore", ckpt, timeout=timeout, check=False)
    expect(r.returncode == 0, f"{name}: restored job exited 0 (got {r.returncode}; {r.stderr.strip()})")
    got = [l for l in lines_of(out) if not ignore(l)]
    if got != expected:
        raise AssertionError(f"{name}: output differs from an uninterrupted run\n"
                             f"before restore: {before}\nafter: {got}\nexpected: {expected}")
    print(f"ok   {name}: continued from line {len(before)} to {len(got)}, output identical")


def uninterrupted(argv, timeout=60, environ=None):
    """An uninterrupted run of argv: (exit status, its stdout lines), what a
    restored run's output is compared with."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=environ)
    return r.returncode, r.stdout.splitlines()


@case
def counter_c(env):
    dump_kill_restore(env, [env.prog("counter"), "8", "200"], "counter", 3,
                      [str(i) for i in range(1, 9)])


@case
def counter_python(env):
    dump_kill_restore(env, [sys.executable, env.src("counter.py"), "8", "200"], "counter_py", 3,
                      [str(i) for i in range(1, 9)])


@case
def counter_static(env):
    dump_kill_restore(env, [env.prog("counter_static"), "8", "200"], "counter_static", 3,
                      [str(i) for i in range(1, 9)])


@case
def avx512(env):
    probe = subprocess.run([env.prog("avx512"), "0", "0"], capture_output=True, text=True)
    if probe.returncode == 3:
        raise Skip("this CPU has no AVX-512F")
    dump_kill_restore(env, [env.prog("avx512"), "10", "200"], "avx512", 3,
                      [f"round {i} ok" for i in range(1, 11)] + ["round 10 all ok"])


@case
def avx512_leave_running(env):
    # Dumps that leave the job running leave its extended register state as
    # it was: the parasite's code and the snapshot's fork run in the job's
    # thread, and snap does not write its XSAVE area back (the blob touches
    # no x87, SSE or AVX register).
    probe = subprocess.run([env.prog("avx512"), "0", "0"], capture_output=True, text=True)
    if probe.returncode == 3:
        raise Skip("this CPU has no AVX-512F")
    out = env.path("avx512_lr.out")
    p = start([env.prog("avx512"), "12", "150"], stdout_path=out)
    wait_lines(out, 2)
    for i in range(3):
        wait_lines(out, 2 + i)
        if p.poll() is not None:
            expect(False, f"before dump {i + 1}: the job ended (exit {p.returncode}, last line "
                          f"{lines_of(out)[-1:]})")
            return
        env.snap_run("dump", "--pid", str(p.pid), "-o", env.path(f"avx512_lr{i}"))
    p.wait(timeout=60)
    got = lines_of(out)
    expect(p.returncode == 0 and got == [f"round {i} ok" for i in range(1, 13)] + ["round 12 all ok"],
           f"the job checked its zmm16-31 and k1-7 every round after 3 dumps (exit {p.returncode}, "
           f"last line {got[-1:] or 'none'})")


@case
def bc_pi(env):
    if not shutil.which("bc"):
        raise Skip("bc is not installed")
    prog = env.path("pi.bc")
    with open(prog, "w") as f:
        f.write("scale=1800; 4*a(1)\n")
    ref = subprocess.run(["bc", "-l"], stdin=open(prog), capture_output=True, text=True).stdout
    out = env.path("pi.out")
    ckpt = env.path("pi.ckpt")
    p = start(["bc", "-l"], stdout_path=out, stdin_path=prog)
    import time
    time.sleep(0.5)
    expect(p.poll() is None, "bc still computing when dumped")
    env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
    p.wait()
    expect(os.path.getsize(out) == 0, "bc had printed nothing yet")
    r = env.snap_run("restore", ckpt, timeout=300, check=False)
    expect(r.returncode == 0, f"restored bc exited 0 ({r.stderr.strip()})")
    with open(out) as f:
        got = f.read()
    expect(got == ref and len(ref) > 1800, "pi digits identical to an uninterrupted bc")


@case
def xz_file_to_file(env):
    p, ref, out, ckpt = xz_dumped(env, "xz")
    r = env.snap_run("restore", ckpt, timeout=300, check=False)
    expect(r.returncode == 0, f"restored xz exited 0 ({r.stderr.strip()})")
    with open(out, "rb") as f:
        got = f.read()
    expect(got == ref, "xz output identical to an uninterrupted run (input and output offsets)")


def xz_dumped(env, name):
    """xz compressing a file into a file, dumped with --kill mid-stream: its
    process, the output of an uninterrupted run, the output file, the image."""
    if not shutil.which("xz"):
        raise Skip("xz is not installed")
    import random
    src = env.path(f"{name}-data.txt")
    rnd = random.Random(7)
    with open(src, "w") as f:
        for i in range(250000):
            f.write(f"{i} {rnd.random()}\n")
    ref = subprocess.run(["xz", "-T1", "-6", "-c", src], capture_output=True).stdout
    out = env.path(f"{name}-data.txt.xz")
    ckpt = env.path(f"{name}.ckpt")
    p = subprocess.Popen(["xz", "-T1", "-6", "-c", src], stdout=open(out, "wb"))
    wait_for(lambda: os.path.getsize(out) > 0 or p.poll() is not None, 60, "xz output")
    expect(p.poll() is None, "xz still running when dumped")
    env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
    p.wait()
    partial = os.path.getsize(out)
    expect(0 < partial < len(ref), f"xz was stopped mid-stream ({partial} of {len(ref)} bytes)")
    return p, ref, out, ckpt


@case
def changed_input_refused(env):
    # The file xz reads is cut short, then removed, between dump and restore:
    # each restore refuses, naming the fd and what changed, and starts
    # nothing; with the file back as it was, xz finishes as if never stopped.
    p, ref, out, ckpt = xz_dumped(env, "changed")
    src = env.path("changed-data.txt")
    os.rename(src, src + ".orig")
    with open(src + ".orig", "rb") as f, open(src, "wb") as g:
        g.write(f.read(100))
    partial = os.path.getsize(out)
    r = env.snap_run("restore", ckpt, check=False, timeout=60)
    expect(r.returncode == 1 and f"({src}) is now 100 bytes, shorter than the saved offset" in r.stderr,
           f"a restore onto a shortened input is refused, naming it: {r.stderr.strip()}")
    os.unlink(src)
    r = env.snap_run("restore", ckpt, check=False, timeout=60)
    expect(r.returncode == 1 and "cannot restore" in r.stderr and src in r.stderr
           and "--allow-changed-files" in r.stderr,
           f"a restore without the input file is refused, naming it: {r.stderr.strip()}")
    expect(os.path.getsize(out) == partial and not pid_alive(p.pid), "nothing was started")
    os.rename(src + ".orig", src)
    r = env.snap_run("restore", ckpt, timeout=300, check=False)
    with open(out, "rb") as f:
        got = f.read()
    expect(r.returncode == 0 and got == ref,
           f"with the input back, xz finishes as an uninterrupted run ({r.stderr.strip()})")


@case
def names_come_back(env):
    ckpt, pid, out = dump_counter(env, "names")
    r = subprocess.Popen([env.snap, "restore", ckpt], stderr=subprocess.PIPE, text=True)
    n = len(lines_of(out))
    wait_lines(out, n + 2)
    pid = live_pid(pid)
    with open(f"/proc/{pid}/comm") as f:
        comm = f.read().strip()
    exe = os.readlink(f"/proc/{pid}/exe")
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    r.kill()
    import signal
    os.kill(pid, signal.SIGKILL)
    r.wait()
    expect(comm == "counter", f"/proc/PID/comm is the job's name again (got {comm!r})")
    expect(exe == env.prog("counter"), f"/proc/PID/exe is the job's binary (got {exe})")
    expect(argv[0].decode().endswith("counter") and argv[1] == b"1000", f"its command line is back: {argv[:3]}")


@case
def restore_killed_midway(env):
    # snap restore is SIGKILLed at seeded instants while it rebuilds a
    # 256 MiB, 2-thread job: nothing half-built may survive (the skeleton is
    # traced with PTRACE_O_EXITKILL), and the image restores fine afterwards.
    import random
    import signal
    import time
    p, out = start_job(env, "mk", [env.prog("memthreads"), "256", "40", "50"], 5, timeout=60)
    ckpt = env.path("mk.ckpt")
    env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
    p.wait()
    t0 = time.monotonic()
    r = subprocess.Popen([env.snap, "restore", "--detach", ckpt], stderr=subprocess.PIPE)
    r.wait(timeout=60)
    full = time.monotonic() - t0
    expect(r.returncode == 0, f"a restore takes {full:.3f} s")
    os.kill(p.pid, signal.SIGKILL)

    def gone(pid):
        # Orphans (the killed restore's child) come to us, the subreaper.
        reap_orphans()
        return not os.path.exists(f"/proc/{pid}")

    wait_for(lambda: gone(p.pid), 10, "the pid to be free")
    rnd = random.Random(1234)
    interrupted = 0
    kills = 16
    for i in range(kills):
        r = subprocess.Popen([env.snap, "restore", "--detach", ckpt], stderr=subprocess.DEVNULL)
        # Half early, while the skeleton is being set up, half anywhere.
        time.sleep(rnd.uniform(0, (0.1 if i % 2 else 0.7) * full))
        r.send_signal(signal.SIGKILL)
        r.wait()
        if r.returncode == -9:
            interrupted += 1
            wait_for(lambda: gone(p.pid), 10, f"kill {i}: no half-restored process left")
        else:
            os.kill(p.pid, signal.SIGKILL)  # it finished first; end the job
            wait_for(lambda: gone(p.pid), 10, "the restored job to end")
    print(f"{interrupted} of {kills} kills landed while snap restore was working")
    expect(interrupted >= 3, "most kills interrupted a restore")
    before = len(lines_of(out))
    r = env.snap_run("restore", ckpt, check=False, timeout=120)
    expect(r.returncode == 0, f"the image still restores and the job finishes ({r.stderr.strip()})")
    expect(lines_of(out)[-1] == "done", "the job ran to its end")


@case
def dump_restore_twice(env):
    p, out = start_job(env, "twice", [env.prog("counter"), "12", "150"], 3)
    env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", env.path("c1"))
    p.wait()
    pid = p.pid
    # Restore in the background, dump the restored process again.
    r1 = subprocess.Popen([env.snap, "restore", env.path("c1")], stderr=subprocess.PIPE, text=True)
    n = len(lines_of(out))
    wait_lines(out, n + 3)
    pid = live_pid(pid)
    expect(pid_alive(pid), "the restored counter runs with its old pid")
    env.snap_run("dump", "--kill", "--pid", str(pid), "-o", env.path("c2"))
    r1.wait(timeout=30)
    expect(r1.returncode == 128 + 9, f"first snap restore reports its job killed (got {r1.returncode})")
    r2 = env.snap_run("restore", env.path("c2"), check=False)
    expect(r2.returncode == 0, f"second restore ran to the end ({r2.stderr.strip()})")
    expect(lines_of(out) == [str(i) for i in range(1, 13)], "output 1..12 across two restores")


def dump_counter(env, name):
    out = env.path(f"{name}.out")
    p = start([env.prog("counter"), "1000", "100"], stdout_path=out)
    wait_lines(out, 2)
    ckpt = env.path(name)
    env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
    p.wait()
    return ckpt, p.pid, out


@case
def corrupted_page_block(env):
    ckpt, pid, out = dump_counter(env, "corrupt")
    pages = os.path.join(ckpt, "pages.bin")
    size = os.path.getsize(pages)
    expect(size > 64, "the image has stored pages")
    with open(pages, "r+b") as f:
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0x40]))
    n = len(lines_of(out))
    r = env.snap_run("restore", ckpt, check=False)
    expect(r.returncode == 1, f"a damaged image is refused with exit 1 (got {r.returncode})")
    expect("pages.bin" in r.stderr and "block" in r.stderr, f"the message names the damage: {r.stderr.strip()}")
    expect(not pid_alive(pid) and len(lines_of(out)) == n, "nothing was started")


@case
def truncated_manifest(env):
    ckpt, pid, out = dump_counter(env, "trunc")
    man = os.path.join(ckpt, "manifest.json")
    with open(man, "r+b") as f:
        f.truncate(os.path.getsize(man) // 2)
    r = env.snap_run("restore", ckpt, check=False)
    expect(r.returncode == 1, f"a truncated manifest is refused with exit 1 (got {r.returncode})")
    expect("manifest" in r.stderr, f"the message names the manifest: {r.stderr.strip()}")
    expect(not pid_alive(pid), "nothing was started")


@case
def pid_in_use(env):
    p, out = start_job(env, "inuse", [env.prog("counter"), "1000", "100"], 2)
    ckpt = env.path("inuse")
    env.snap_run("dump", "--pid", str(p.pid), "-o", ckpt)  # leaves it running
    r = env.snap_run("restore", ckpt, check=False)
    expect(r.returncode == 1, f"restore over a live pid is refused with exit 1 (got {r.returncode})")
    expect(f"pid {p.pid} is in use by 'counter'" in r.stderr, f"the message names the holder: {r.stderr.strip()}")
    n = len(lines_of(out))
    wait_lines(out, n + 2)
    expect(p.poll() is None, "the original keeps running")


@case
def queued_signals(env):
    import ctypes
    import signal
    libc = ctypes.CDLL(None, use_errno=True)
    p, out = start_job(env, "sigq", [env.prog("sigqueue"), "8", "200"], 2)
    sigrtmin = signal.SIGRTMIN
    expect(libc.sigqueue(p.pid, signal.SIGUSR1, ctypes.c_void_p(42)) == 0, "SIGUSR1 queued with value 42")
    expect(libc.sigqueue(p.pid, sigrtmin, ctypes.c_void_p(7)) == 0, "SIGRTMIN queued with value 7")
    wait_lines(out, 4)
    ckpt = env.path("sigq.ckpt")
    env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
    p.wait()
    r = env.snap_run("restore", ckpt, check=False)
    expect(r.returncode == 0, f"restored job exited 0 ({r.stderr.strip()})")
    expected = ["blocked"] + [str(i) for i in range(1, 9)] + [
        "SIGUSR1 code=SI_QUEUE value=42", "SIGRTMIN code=SI_QUEUE value=7"]
    expect(lines_of(out) == expected, f"queued signals survived with their values: {lines_of(out)}")


@case
def victim_handlers_timers_pipe(env):
    # The victim checks its own handlers, alternate stack, interval timer,
    # POSIX timer and unread pipe data as it runs (tests/programs/victim.c).
    _, ref = uninterrupted([env.prog("victim"), "40", "20"])
    expect(ref[-1] == "DONE ok" and not any("FAIL" in l for l in ref), "an uninterrupted victim passes its checks")
    # Its stderr line "ready PID" shares the output file here.
    dump_kill_restore(env, [env.prog("victim"), "40", "20"], "victim", 15, ref,
                      ignore=lambda l: l.startswith("ready "))


@case
def threads_memory(env):
    # Two threads: a worker re-checksums 64 MiB on a condition variable.
    _, ref = uninterrupted([env.prog("memthreads"), "64", "30", "50"], timeout=120)
    dump_kill_restore(env, [env.prog("memthreads"), "64", "30", "50"], "memthreads", 12, ref)


@case
def openmp(env):
    if not os.path.exists(env.prog("omp_sum")):
        raise Skip("no OpenMP compiler support here (omp_sum was not built)")
    envvars = dict(os.environ, OMP_NUM_THREADS="4")
    _, ref = uninterrupted([env.prog("omp_sum"), "30", "60"], timeout=120, environ=envvars)
    expect(ref[0] == "threads 4", "an uninterrupted run uses 4 threads")
    dump_kill_restore(env, [env.prog("omp_sum"), "30", "60"], "omp_sum", 10, ref, environ=envvars)


@case
def signals_forwarded(env):
    import signal
    import time
    ckpt, pid, out = dump_counter(env, "sig")
    r = subprocess.Popen([env.snap, "restore", ckpt], stderr=subprocess.PIPE, text=True)
    n = len(lines_of(out))
    wait_lines(out, n + 2)
    r.send_signal(signal.SIGTERM)
    r.wait(timeout=30)
    expect(r.returncode == 128 + signal.SIGTERM,
           f"snap restore passes SIGTERM on and exits 143 like the job (got {r.returncode})")
    time.sleep(0.2)
    expect(not pid_alive(pid), "the restored job received it and ended")


@case
def detach(env):
    ckpt, pid, out = dump_counter(env, "detach")
    r = env.snap_run("restore", "--detach", ckpt, timeout=60)
    host = live_pid(pid)
    expect(f"pid {host} is running" in r.stderr, f"--detach reports the pid: {r.stderr.strip()}")
    pid = host
    n = len(lines_of(out))
    wait_lines(out, n + 3)
    expect(pid_alive(pid), "the detached job keeps running after snap restore returned")
    import signal
    os.kill(pid, signal.SIGKILL)

@case
def three_cycles_same_depth(env):
    # dump -> restore three times in a row; the restored job keeps its pid,
    # and (as an ordinary user, in a fresh pid namespace each time) never
    # ends up nested deeper: the namespace depth is the same after each cycle.
    out = env.path("cycles.out")
    p = start([env.prog("counter"), "40", "100"], stdout_path=out)
    saved = p.pid
    host = p.pid
    depths = []
    for cycle in range(1, 4):
        wait_lines(out, len(lines_of(out)) + 3)
        ckpt = env.path(f"cycle{cycle}")
        env.snap_run("dump", "--kill", "--pid", str(host), "-o", ckpt)
        if cycle == 1:
            p.wait()
        wait_for(lambda: not pid_alive(host), 10, "the dumped job to be gone")
        reap_orphans()
        r = env.snap_run("restore", "--detach", ckpt, timeout=60)
        host = live_pid(saved)
        with open(f"/proc/{host}/status") as f:
            nspid = next(l.split()[1:] for l in f.read().splitlines() if l.startswith("NSpid:"))
        depths.append(len(nspid))
        expect(nspid[-1] == str(saved), f"cycle {cycle}: the job has its pid {saved} ({nspid})")
    expect(len(set(depths)) == 1, f"the pid namespace depth stays the same: {depths}")
    wait_for(lambda: lines_of(out)[-1:] == ["40"], 60, "the job to finish")
    expect(lines_of(out) == [str(i) for i in range(1, 41)], "output 1..40 across three restores")

@case
def job_keeps_its_user(env):
    # Root restores another user's job: it runs as that user again, not as
    # root. That user restoring a root job is refused before anything runs.
    if os.geteuid() != 0 or os.environ.get("SNAP_TEST_UNPRIVILEGED"):
        raise Skip("needs root, to run a job as another user")
    os.chmod(env.tmp, 0o777)
    out = env.path("user.out")
    open(out, "w").close()
    os.chown(out, 65534, 65534)
    p = start([env.prog("counter"), "25", "100"], stdout_path=out, user=65534, group=65534,
              extra_groups=[])
    wait_lines(out, 3)
    ckpt = env.path("user.ckpt")
    env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
    p.wait()
    r = subprocess.Popen([env.snap, "restore", ckpt], stderr=subprocess.PIPE, text=True)
    n = len(lines_of(out))
    wait_lines(out, n + 2)
    with open(f"/proc/{p.pid}/status") as f:
        ids = {l.split(":")[0]: l.split()[1:] for l in f.read().splitlines()
               if l.startswith(("Uid:", "Gid:"))}
    expect(ids["Uid"] == ["65534"] * 4 and ids["Gid"] == ["65534"] * 4,
           f"the restored job runs as uid/gid 65534 again ({ids})")
    r.wait(timeout=60)
    expect(r.returncode == 0 and lines_of(out) == [str(i) for i in range(1, 26)],
           "and runs to its end with its output continued")

    q = start([env.prog("counter"), "1000", "100"], stdout_path=env.path("root.out"))
    wait_lines(env.path("root.out"), 2)
    ckpt2 = env.path("root.ckpt")
    env.snap_run("dump", "--kill", "--pid", str(q.pid), "-o", ckpt2)
    q.wait()
    subprocess.run(["chmod", "-R", "a+rX", ckpt2], check=True)
    os.chmod(env.path("root.out"), 0o666)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", env.snap,
                        "restore", ckpt2], capture_output=True, text=True, timeout=60)
    expect(r.returncode == 1 and f"pid {q.pid} (counter) ran with uids 0/0/0/0" in r.stderr,
           f"an ordinary user restoring root's job is refused, naming pid and ids: {r.stderr.strip()}")
    expect(len(lines_of(env.path("root.out"))) == 2, "nothing of that job ran")

@case
def ten_thousand_fds(env):
    # 10,000 open files: dumped without comparing every pair of them (by
    # several threads where snap may use several CPUs), and restored under
    # the job's own raised fd limit; the epoll after them still watches its
    # eventfd.
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 10100:
        raise Skip(f"the hard RLIMIT_NOFILE here ({hard}) is below the job's 10,100")
    dump_kill_restore(env, [env.prog("manyfds"), "10000"], "manyfds", 5,
                      [f"{i} 1 1" for i in range(1, 31)])

@case
def fd_offsets_leave_running(env):
    # A dump that lets the job run on reads most fds from hints taken just
    # before the stop (src/tracer/fd_hints.h), though this job moves every
    # fd's offset and flips flags and close-on-exec all the time: what the
    # image holds must be each fd as it was at the stop, as the job's memory
    # expects it. The job carries on after the dump; killed and restored, it
    # continues from the dump point with every fd as it expects.
    import resource
    n = 3000
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < n + 100:
        raise Skip(f"the hard RLIMIT_NOFILE here ({hard}) is below the job's {n + 100}")
    out, ckpt = env.path("fd_offsets.out"), env.path("fd_offsets.ckpt")
    rounds = 40
    expected = [f"{i} ok" for i in range(1, rounds + 1)]
    p = start([env.prog("fd_offsets"), env.path("fd_offsets.dat"), str(n), str(rounds), "50"],
              stdout_path=out)
    wait_lines(out, 5)
    r = env.snap_run("dump", "-v", "--pid", str(p.pid), "-o", ckpt)
    hinted = re.search(r"(\d+) of (\d+) fds read from hints", r.stderr)
    expect(hinted and int(hinted.group(1)) >= n, f"its data files were read from hints: "
           f"{hinted.group(0) if hinted else r.stderr.strip()}")
    at_dump = len(lines_of(out))
    wait_lines(out, at_dump + 3)  # it carries on after the dump
    p.kill()
    p.wait()
    r = env.snap_run("restore", ckpt, check=False, timeout=120)
    got = lines_of(out)
    expect(r.returncode == 0 and got == expected,
           f"restored from the dump point, every fd as the job expects (exit {r.returncode}; "
           f"{r.stderr.strip()}; {[l for l in got if 'ok' not in l][:3] or got[-3:]})")
    print(f"ok   fd_offsets_leave_running: {hinted.group(0)}; dumped at line {at_dump}, "
          f"restored to the end")


@case
def changed_binary_refused(env):
    # The counter's binary is rebuilt (replaced) between dump and restore, as
    # when a user recompiles between requeues: the restore refuses, naming
    # the file, and starts nothing; with the original back, it restores.
    exe = env.path("counter-copy")
    shutil.copy(env.prog("counter"), exe)
    out = env.path("changed.out")
    p = start([exe, "20", "100"], stdout_path=out)
    wait_lines(out, 3)
    ckpt = env.path("changed.ckpt")
    env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
    p.wait()
    os.rename(exe, exe + ".orig")
    shutil.copy(env.prog("counter_static"), exe)  # another build of the program
    before = lines_of(out)
    r = env.snap_run("restore", ckpt, check=False, timeout=60)
    expect(r.returncode == 1 and exe in r.stderr and "changed since the dump" in r.stderr,
           f"a restore onto a rebuilt binary is refused, naming it: {r.stderr.strip()}")
    expect(lines_of(out) == before and not pid_alive(p.pid),
           "nothing was started")
    os.replace(exe + ".orig", exe)
    r = env.snap_run("restore", ckpt, check=False, timeout=60)
    expect(r.returncode == 0 and lines_of(out) == [str(i) for i in range(1, 21)],
           f"with the original binary back, the job restores and finishes ({r.stderr.strip()})")


def epoll_expected(limit):
    """What tests/programs/epoll_events prints, computed as it runs."""
    count, pending, out = 30, 0, []
    for i in range(1, limit + 1):
        count += i
        pending += 1
        tags = (0xe7e7e7e7e7e7e7e7 ^ 0x1) ^ (0x9193 ^ 0x1)  # data ^ EPOLLIN, each
        line = f"{i}: 2 ready, tags {tags:x}"
        if i % 3 == 0:
            line += f", eventfd held {count}"
            count, pending = 0, pending - 1
        out.append(line)
    return out


@case
def epoll_eventfd(env):
    # An epoll watching an eventfd (level) and a pipe (edge triggered), with
    # the eventfd's counter and an unread byte in the pipe at the dump: both
    # restored, and the epoll reports them with the job's own data.
    dump_kill_restore(env, [env.prog("epoll_events"), "12", "150"], "epoll", 4,
                      epoll_expected(12))


@case
def without_vdso(env):
    # A job that unmapped its vDSO (tests/programs/no_vdso.c): the dump finds
    # a system call instruction in its code instead, and the restored job has
    # no [vdso] or [vvar] either (it checks every round).
    dump_kill_restore(env, [env.prog("no_vdso"), "10", "150"], "no_vdso", 3,
                      [f"{i} absent" for i in range(1, 11)])


@case
def droppable_and_wipeonfork(env):
    # MAP_DROPPABLE memory comes back droppable (and empty, as the kernel may
    # leave it), MADV_WIPEONFORK memory keeps its data and its flag: a child
    # forked after restore sees both zeroed (tests/programs/droppable.c).
    rc, ref = uninterrupted([env.prog("droppable"), "10", "150"])
    if rc == 2:
        raise Skip("this kernel has no MAP_DROPPABLE (Linux 6.11+)")
    expect(rc == 0 and len(ref) == 10, "an uninterrupted run works")
    dump_kill_restore(env, [env.prog("droppable"), "10", "150"], "droppable", 3, ref)


@case
def namespace_fds(env):
    # Fds on the job's own namespaces (/proc/self/ns/net, uts, ipc, mnt,
    # cgroup) come back on the same namespaces (tests/programs/ns_fds.c).
    dump_kill_restore(env, [env.prog("ns_fds"), "10", "150"], "ns_fds", 3,
                      [f"{i} net=same uts=same ipc=same mnt=same cgroup=same" for i in range(1, 11)])


@case
def aio_context(env):
    # A kernel AIO context made before the dump is used after the restore
    # (tests/programs/aio_job.c): io_setup makes its ring again, moved to
    # where the job's was, so the job's context id works; output identical.
    _, ref = uninterrupted([env.prog("aio_job"), "10", "150"])
    expect(len(ref) == 10, "an uninterrupted run works")
    dump_kill_restore(env, [env.prog("aio_job"), "10", "150"], "aio_job", 3, ref)


@case
def aio_uncollected_refused(env):
    # A completion left in an AIO ring cannot be put back (io_setup makes an
    # empty ring, the kernel keeps its own tail): the dump refuses, naming
    # the pid and the context, and the job runs on.
    out = env.path("aio_uncollected.out")
    p = start([env.prog("aio_job"), "--uncollected"], stdout_path=out)
    wait_lines(out, 1)
    r = env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", env.path("aio.ckpt"),
                     check=False)
    expect(r.returncode != 0 and f"pid {p.pid}: the AIO context" in r.stderr
           and "1 completed event(s)" in r.stderr,
           f"the dump is refused, naming pid and context: {r.stderr.strip()}")
    expect(p.poll() is None, "the job is still running")
    p.kill()
    p.wait()


@case
def sigtrap_ignored(env):
    # A job ignoring SIGTRAP still ignores it after a restore (each batch of
    # restore's system calls ends on a breakpoint, and the kernel resets an
    # ignored SIGTRAP it forces): tests/programs/trap_ignored.c raises it.
    dump_kill_restore(env, [env.prog("trap_ignored"), "10", "150"], "trap_ignored", 3,
                      [f"{i} ignored" for i in range(1, 11)])


@case
def signal_during_restore(env):
    # A signal sent to the job's pid the moment it exists again, while
    # restore is still building the process (as a batch system or a test
    # harness may do): it waits for the restored job, which then gets it,
    # instead of killing the half-made process and failing the restore.
    # (Root only: an ordinary user's restore gives the job a pid namespace
    # of its own, where the old pid number is not the job's from outside.)
    import signal
    import time
    for k in range(3):
        ckpt = env.path(f"sigrace{k}.ckpt")
        p = start([env.prog("counter"), "100", "100"], stdout_path=env.path(f"sigrace{k}.out"))
        wait_lines(env.path(f"sigrace{k}.out"), 2)
        env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
        p.wait()
        reap_killed_children()
        r = subprocess.Popen([env.snap, "restore", ckpt], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(p.pid, signal.SIGTERM)
                break
            except ProcessLookupError:
                time.sleep(0.0002)
        _, err = r.communicate(timeout=60)
        expect(r.returncode == 128 + signal.SIGTERM and "died while being set up" not in err,
               f"round {k}: the restored job got the SIGTERM (exit {r.returncode}; {err.strip()})")


@case
def epoll_closed_number(env):
    # The same, with both files registered under fd 50, closed after each
    # registration and then reused for /dev/null: the epoll watches them by
    # a number that names another file. Restore registers each under 50
    # through a copy and puts /dev/null back: the output is the same.
    dump_kill_restore(env, [env.prog("epoll_events"), "--closed", "12", "150"], "epoll_closed", 4,
                      epoll_expected(12))


@case
def shared_fd_table_refused(env):
    # Two processes sharing one fd table (clone with CLONE_FILES, not a
    # thread) would come back with a table each: the dump refuses, naming
    # both, and the job runs on.
    out = env.path("shared_fdt.out")
    p = start([env.prog("shared_fdt")], stdout_path=out)
    wait_lines(out, 1)
    parent, child = lines_of(out)[0].split()[1:3]
    r = env.snap_run("dump", "--kill", "--pid", parent, "-o", env.path("shared_fdt.ckpt"),
                     check=False)
    named = (f"pid {parent} and pid {child} share one fd table" in r.stderr
             or f"pid {child} and pid {parent} share one fd table" in r.stderr)
    expect(r.returncode != 0 and named,
           f"the dump is refused, naming both: {r.stderr.strip()}")
    expect(p.poll() is None and pid_alive(int(child)), "the job is still running")
    p.kill()
    p.wait()


@case
def thread_own_tables_refused(env):
    # A thread with an fd table, or a cwd/root/umask, of its own (unshare in
    # that thread) would come back sharing its process's: the dump (the
    # job left running) refuses before anything is injected, naming the
    # thread, writes nothing, and the job runs on.
    for what, words in (("files", "an fd table"), ("fs", "a cwd, root and umask")):
        out = env.path(f"thread_{what}.out")
        p = start([env.prog("shared_fdt"), what], stdout_path=out)
        wait_lines(out, 1)
        pid, tid = lines_of(out)[0].split()[1:3]
        ckpt = env.path(f"thread_{what}.ckpt")
        r = env.snap_run("dump", "--pid", pid, "-o", ckpt, check=False)
        expect(r.returncode != 0 and f"thread {tid} of pid {pid} has {words} of its own" in r.stderr,
               f"{what}: the dump is refused, naming the thread: {r.stderr.strip()}")
        expect(not os.path.exists(ckpt), f"{what}: nothing written")
        status = open(f"/proc/{pid}/status").read()
        expect(p.poll() is None and "TracerPid:\t0" in status, f"{what}: the job runs on, untraced")
        p.kill()
        p.wait()


@case
def epoll_stale_fd_refused(env):
    # An epoll watching a file that only another process still holds (its
    # child; the parent closed it) cannot be registered again by the parent:
    # the dump refuses, naming the pid and the epoll's fd, and the job runs on.
    out = env.path("stale.out")
    p = start([env.prog("epoll_events"), "--stale"], stdout_path=out)
    wait_lines(out, 1)
    words = lines_of(out)[0].split()  # "epoll 3 watches closed fd 7 (file kept by child 99)"
    ep, closed = words[1], words[5]
    r = env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", env.path("stale.ckpt"),
                     check=False)
    expect(r.returncode != 0 and f"pid {p.pid} fd {ep} (epoll)" in r.stderr
           and f"no longer open as fd {closed}" in r.stderr,
           f"the dump is refused, naming pid, epoll fd and watched fd: {r.stderr.strip()}")
    expect(p.poll() is None, "the job is still running")
    p.kill()
    p.wait()


def anon_fds_expected(limit, inotify=True):
    """What tests/programs/anon_fds prints."""
    return [f"{i}: signal 10, timer every 150 ms, "
            + (f"inotify wd 2 (dir 2 file 3) created f{i}, " if inotify
               else "inotify wd 0 (dir 0 file 0) created -, ")
            + "flock 1 posix 1 ofd 1" for i in range(1, limit + 1)]


@case
def signalfd_timerfd_inotify_locks(env):
    # An epoll over a signalfd (its mask; the signal sent through a pidfd of
    # the job's own), a timerfd (its period) and an inotify fd (its watches,
    # under their own numbers 2 and 3), with an flock, a POSIX and an OFD
    # lock: all come back and the run continues
    # as if uninterrupted (the locks seen from other opens and /proc/locks).
    dump_kill_restore(env, [env.prog("anon_fds"), "12", "150", env.path("anon_dir")],
                      "anon_fds", 4, anon_fds_expected(12))


@case
def signalfd_timerfd_locks(env):
    # The same without inotify: an unprivileged dump cannot open a watched
    # file by its handle (CAP_DAC_READ_SEARCH), so the nobody variant runs this.
    dump_kill_restore(env, [env.prog("anon_fds"), "12", "150", env.path("anon_dir"),
                            "--no-inotify"], "anon_fds", 4, anon_fds_expected(12, False))


@case
def inotify_deleted_target(env):
    # A watch on a file the job unlinked but keeps open comes back on the
    # remade (and again unlinked) file: the job's fchmod through its fd is
    # still reported by the watch, under its number 3.
    expected = [line + ", deleted file's watch reports attrib" for line in anon_fds_expected(12)]
    dump_kill_restore(env, [env.prog("anon_fds"), "12", "150", env.path("anon_dir"),
                            "--unlink-watched"], "anon_fds", 4, expected)


@case
def inotify_deleted_target_refused(env):
    # A watch on a deleted file that only a process outside the job holds
    # open cannot be added again: the dump refuses, naming pid, fd and
    # watch, and the job runs on.
    out = env.path("gone.out")
    d = env.path("gone_dir")
    p = start([env.prog("anon_fds"), "1000", "150", d], stdout_path=out)
    wait_lines(out, 1)
    outside = os.open(os.path.join(d, "watched"), os.O_RDONLY)  # watch 3 is on it
    os.unlink(os.path.join(d, "watched"))
    r = env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", env.path("gone.ckpt"),
                     check=False)
    os.close(outside)
    expect(r.returncode != 0 and f"pid {p.pid} fd " in r.stderr and "(inotify): watch 3" in r.stderr
           and "no fd or mapping of the job holds it" in r.stderr,
           f"the dump is refused, naming pid, inotify fd and watch: {r.stderr.strip()}")
    expect(p.poll() is None, "the job is still running")
    p.kill()
    p.wait()


@case
def unknown_anon_fd_refused(env):
    # An anonymous-inode fd restore does not know (here a userfaultfd) is
    # refused at dump, naming pid, fd and object, before --kill ends the job.
    out = env.path("uffd.out")
    p = start([env.prog("anon_fds"), "--userfaultfd"], stdout_path=out)
    wait_lines(out, 1)
    fd = lines_of(out)[0].split()[1]
    r = env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", env.path("uffd.ckpt"),
                     check=False)
    expect(r.returncode != 0 and f"pid {p.pid} fd {fd} (anon_inode:[userfaultfd])" in r.stderr
           and "cannot restore this kind of file" in r.stderr,
           f"the dump is refused, naming pid, fd and object: {r.stderr.strip()}")
    expect(p.poll() is None, "the job is still running")
    p.kill()
    p.wait()


@case
def fifo_data_pipe_size(env):
    # Bytes waiting in a FIFO the job holds O_RDWR, a pipe grown with
    # F_SETPIPE_SZ and its read end's O_NONBLOCK, owner and signal come back.
    expected = [f"{i}: fifo {chr(ord('a') + (i - 1) % 26)}, pipe size 1048576, nonblock 1, "
                "owner self 1, signal 12" for i in range(1, 11)]
    dump_kill_restore(env, [env.prog("fifo_state"), "10", "150", env.path("state.fifo")],
                      "fifo_state", 3, expected)


@case
def process_settings(env):
    # oom_score_adj, THP disabled, no_new_privs, a membarrier registration
    # and the audit login uid come back as the job set them, and an fd on
    # its own network namespace is on that namespace again, and its SIGTRAP
    # handler still runs (the breakpoints of restore's system call batches
    # must not reset it). The job sets
    # the login uid where it is unset (to its uid, or 4242 as root), else it
    # is inherited: a first run says which.
    first = subprocess.run([env.prog("settings"), "1", "0"], capture_output=True, text=True,
                           check=True).stdout.split()
    uid = [w for w in first if w.startswith("loginuid=")][0]
    expected = [f"{i} oom_score_adj=321 thp_disable=1 no_new_privs=1 membarrier=yes {uid} "
                "netns_fd=1 sigtrap=1" for i in range(1, 9)]
    dump_kill_restore(env, [env.prog("settings"), "8", "200"], "settings", 3, expected)


@case
def madvise_flags(env):
    # Advice (MADV_DONTFORK, SEQUENTIAL, RANDOM, DONTDUMP, HUGEPAGE,
    # NOHUGEPAGE, MERGEABLE, WIPEONFORK), locks (MAP_LOCKED, mlock2, on
    # fault), MAP_NORESERVE and MAP_DROPPABLE come back as smaps' VmFlags
    # show them, contents too: the restored run prints what an uninterrupted
    # one does (computed by one, since the kernel may not offer all of them).
    expected = subprocess.run([env.prog("madvise_flags"), "8", "0"], capture_output=True,
                              text=True, check=True).stdout.splitlines()
    dump_kill_restore(env, [env.prog("madvise_flags"), "8", "200"], "madvise_flags", 3, expected)


@case
def pipe_opened_twice(env):
    # One pipe end opened again through /proc/self/fd: two open file
    # descriptions, only one O_NONBLOCK; both come back, on the same pipe.
    expected = [f"{i}: read {chr(ord('a') + i % 26)} via {'pipe' if i % 2 else 'reopened'}, "
                "nonblock 0 1" for i in range(1, 11)]
    dump_kill_restore(env, [env.prog("pipe_reopen"), "10", "150"], "pipe_reopen", 3, expected)


@case
def shared_map_made_writable(env):
    # A MAP_SHARED file mapping, read-only at the dump, from a descriptor
    # opened read-write: the restored job can still mprotect it writable
    # (the file is opened read-write to map it back).
    data = env.path("shared_map_protect.data")
    expected = [f"{i}: file holds {i}" for i in range(1, 9)]
    dump_kill_restore(env, [env.prog("shared_map_protect"), data, "8", "200"], "shared_map_protect",
                      3, expected)


@case
def thread_timer(env):
    # A SIGEV_THREAD POSIX timer: its signal goes to glibc's helper thread
    # (SIGEV_THREAD_ID), and must again after a restore.
    dump_kill_restore(env, [env.prog("thread_timer"), "10", "150"], "thread_timer", 3,
                      [str(i) for i in range(1, 11)])


@case
def asyncio_sockets(env):
    # A Python asyncio server and its client in one process: a listening TCP
    # socket on 127.0.0.1 (a port the kernel chose), a listening unix socket
    # on a path, a UDP endpoint and a connected UDP client. After the
    # restore the same port and path take new connections (the socket file
    # the killed job left behind is replaced), and the servers' counters
    # carry on.
    name = "asyncio_sockets"
    rounds = 10
    out = env.path(f"{name}.out")
    ckpt = env.path(f"{name}.ckpt")
    sock_path = env.path("server.sock")
    p = start([sys.executable, env.src("asyncio_sockets.py"), str(rounds), "150", sock_path],
              stdout_path=out)
    wait_lines(out, 3)
    # A dump that lands while a round's connection is open is refused (a
    # TCP connection cannot come back) and leaves the job running: again.
    for attempt in range(10):
        r = env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt, check=False)
        if r.returncode == 0:
            break
        expect("TCP connection" in r.stderr or "connected to" in r.stderr,
               f"{name}: a refused dump names an open connection: {r.stderr.strip()}")
        expect(p.poll() is None, f"{name}: a refused dump leaves the job running")
        shutil.rmtree(ckpt, ignore_errors=True)
    expect(r.returncode == 0, f"{name}: dumped ({r.stderr.strip()})")
    p.wait()
    expect(p.returncode == -9, f"{name}: the original was killed by the dump")
    before = lines_of(out)
    expect(len(before) < rounds, f"{name}: killed mid-run ({len(before)} lines)")
    expect(os.path.exists(sock_path), f"{name}: the killed job left its socket file behind")
    r = env.snap_run("restore", ckpt, timeout=120, check=False)
    expect(r.returncode == 0, f"{name}: restored job exited 0 (got {r.returncode}; {r.stderr.strip()})")
    expected = [f"{i} tcp pong {i} ({i}) unix pong {i} ({i}) udp pong {i} ({i})"
                for i in range(1, rounds + 1)]
    got = lines_of(out)
    if got != expected:
        raise AssertionError(f"{name}: output differs from an uninterrupted run\n"
                             f"before restore: {before}\nafter: {got}\nexpected: {expected}")
    print(f"ok   {name}: continued from line {len(before)} to {len(got)}, output identical")


@case
def unix_socket_states(env):
    # Unix sockets other than connected pairs (tests/programs/unix_states.py):
    # a bound datagram socket with messages waiting, a socket whose peer
    # wrote and closed, a pair shut down one way, listening sockets on a
    # deleted path and on an abstract name, a buffer size, O_NONBLOCK, a
    # pipe end in flight (SCM_RIGHTS), an unbound socket bound after the
    # restore, connections not yet accepted (stream, in their order, and
    # seqpacket). All checked by the program at
    # the end of its run, which must print what an uninterrupted run prints.
    where = env.path("unix_states")
    os.makedirs(where, exist_ok=True)
    rounds = 8
    expected = [f"round {i}" for i in range(1, rounds + 1)] + [
        "dgram: first second True",
        "closed peer: last words True nonblocking True",
        "shut down: True send EPIPE",
        "deleted name: True True 1",
        "abstract: hello True",
        "rcvbuf kept: True",
        "passed fd: fd through",
        "bound later: True",
        "pending: True one two back",
        "pending seqpacket: rec",
    ]
    dump_kill_restore(env, [sys.executable, env.src("unix_states.py"), str(rounds), "150", where],
                      "unix_states", 3, expected)


def pty_lines_expected(lines):
    return [f"got b'line {i}\\n' 40x132" for i in range(1, lines + 1)] + [
        "child: ctty True echo False foreground True session leader True",
        "child exit 0",
    ]


@case
def program_on_a_pty(env):
    # A program on a pseudo-terminal (tests/programs/pty_lines.py): the
    # parent holds the master and writes numbered lines ahead of a child that
    # has the slave as controlling terminal (no echo, 40x132) and reads one
    # line per read(); answers wait in the master. Lines queued both ways,
    # the unfinished one, the settings, the controlling terminal and the
    # foreground group must come back.
    lines = 12
    dump_kill_restore(env, [sys.executable, env.src("pty_lines.py"), str(lines), "150"],
                      "pty_lines", 3, pty_lines_expected(lines))


@case
def program_on_a_pty_leave_running(env):
    # The same, dumped without --kill: the dump reads what waits in the pty
    # and puts it back, so the job goes on as if nothing happened; then the
    # image, restored once the job has ended, runs to the same end (writing
    # its lines again over the same bytes of the output file).
    lines = 12
    out, ckpt = env.path("pty_live.out"), env.path("pty_live.ckpt")
    p = start([sys.executable, env.src("pty_lines.py"), str(lines), "150"], stdout_path=out)
    wait_lines(out, 3)
    env.snap_run("dump", "--pid", str(p.pid), "-o", ckpt)
    p.wait(timeout=60)
    expect(p.returncode == 0, f"the job went on after the dump and exited 0 (got {p.returncode})")
    got = lines_of(out)
    expect(got == pty_lines_expected(lines), f"the job's output after a dump: {got}")
    r = env.snap_run("restore", ckpt, check=False)
    expect(r.returncode == 0, f"restored job exited 0 (got {r.returncode}; {r.stderr.strip()})")
    got = lines_of(out)
    expect(got == pty_lines_expected(lines), f"the restored job's output: {got}")
    print("ok   pty_live: the job kept its terminal's queued data, and so did the image")


@case
def pty_queue_too_large_refused(env):
    # 10000 bytes wait in a pty (tests/programs/pty_big_queue.py), more than
    # a restore can put back: the dump is refused, naming the pty, and the
    # job, not killed, reads every byte intact (the dump put them back).
    out = env.path("pty_big.out")
    p = start([sys.executable, env.src("pty_big_queue.py"), "8000"], stdout_path=out)
    wait_lines(out, 1)
    r = env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", env.path("pty_big.ckpt"),
                     check=False)
    expect(r.returncode != 0 and "10000 bytes queued" in r.stderr,
           f"the dump is refused, saying why (rc {r.returncode}: {r.stderr.strip()})")
    p.wait(timeout=60)
    expect(p.returncode == 0, f"the job was not killed (got {p.returncode})")
    expect(lines_of(out) == ["wrote 10000", "read 10000 intact True"], f"output {lines_of(out)}")
    print("ok   pty_big: refused at dump, the job kept its terminal's data")


@case
def unix_pending_data_refused(env):
    # A connection not yet accepted that carries data: the data cannot be
    # read without accepting it, so the dump refuses, naming pid and fd,
    # and the job runs on.
    where = env.path("busy")
    os.makedirs(where, exist_ok=True)
    out = env.path("busy.out")
    p = start([sys.executable, env.src("unix_states.py"), "--pending-data", where], stdout_path=out)
    wait_lines(out, 1)
    fd = lines_of(out)[0].split()[2]
    r = env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", env.path("busy.ckpt"),
                     check=False)
    expect(r.returncode != 0 and f"pid {p.pid} fd {fd}" in r.stderr
           and "waits to be accepted" in r.stderr,
           f"the dump is refused, naming pid and fd: {r.stderr.strip()}")
    expect(p.poll() is None, "the job is still running")
    p.kill()
    p.wait()


@case
def tcp_connection_refused_at_dump(env):
    # A job holding a TCP connection to a server outside it (here: this
    # test): the dump refuses, naming pid, fd and both addresses, and
    # --kill kills nothing.
    import socket
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    out = env.path("tcp_client.out")
    job = ("import socket, sys, time\n"
           f"s = socket.create_connection(('127.0.0.1', {port}))\n"
           "print(s.fileno(), s.getsockname()[1], flush=True)\n"
           "time.sleep(60)\n")
    p = start([sys.executable, "-c", job], stdout_path=out)
    conn, _ = srv.accept()
    wait_lines(out, 1)
    fd, local_port = lines_of(out)[0].split()
    r = env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", env.path("tcp.ckpt"),
                     check=False)
    expect(r.returncode != 0, "the dump is refused")
    want = f"pid {p.pid} fd {fd}: TCP connection 127.0.0.1:{local_port} -> 127.0.0.1:{port}"
    expect(want in r.stderr, f"the refusal names '{want}': {r.stderr.strip()}")
    expect(p.poll() is None, "the job is still running")
    p.kill()
    p.wait()
    conn.close()
    srv.close()


def tcp_repair_allowed():
    """Whether this process may use TCP repair mode (CAP_NET_ADMIN)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.setsockopt(socket.IPPROTO_TCP, 19, 1)  # TCP_REPAIR
        except PermissionError:
            return False
    return True


def tcp_pair_expected(rounds):
    return [f"round {i}: pong {i} to ping {i}" for i in range(1, rounds + 1)] + [
        "half-closed: b'hello from a half-closed connection\\n'",
        "blob 3200000 bytes 14be4c32330227c8, answer b'answer to a half-closed connection\\n'",
        "ticks in order: True", "child exit 0"]


@case
def tcp_connections(env):
    # TCP connections between a parent and its child (tests/programs/
    # tcp_pair.py, over 127.0.0.1 and ::1), with unread data both ways, a
    # full send queue and a half-closed connection (its FIN unread) at the
    # dump: saved in repair mode, killed without a
    # FIN or RST reaching the peer, restored; the output equals an
    # uninterrupted run's. Without CAP_NET_ADMIN (the nobody variant) the
    # dump is refused instead, naming pid, fd, the connection and
    # CAP_NET_ADMIN, and the job runs on untouched.
    rounds = 8
    argv = [sys.executable, env.src("tcp_pair.py"), str(rounds), "200"]
    if tcp_repair_allowed():
        dump_kill_restore(env, argv, "tcp_pair", 3, tcp_pair_expected(rounds), tree=True)
        return
    out = env.path("tcp_pair.out")
    p = start(argv, stdout_path=out)
    wait_lines(out, 2)
    r = env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", env.path("tcp.ckpt"),
                     check=False)
    expect(r.returncode != 0, "the dump without CAP_NET_ADMIN is refused")
    expect("TCP connection 127.0.0.1:" in r.stderr and "CAP_NET_ADMIN" in r.stderr
           and f"pid {p.pid} fd " in r.stderr,
           f"the refusal names pid, fd, the connection and CAP_NET_ADMIN: {r.stderr.strip()}")
    p.wait(timeout=60)
    expect(p.returncode == 0 and lines_of(out) == tcp_pair_expected(rounds),
           f"the job ran on untouched: {lines_of(out)}")
    print("ok   tcp_connections: refused without CAP_NET_ADMIN, job untouched")


@case
def tcp_outside_peer(env):
    # A job talking to a server outside it (this test) over TCP: dump
    # --tcp-established saves the connection, and a restore without the
    # option refuses before anything runs (is the peer still there?); with
    # --tcp-established the job carries on with the same server, its
    # output equal to an uninterrupted run's.
    if not tcp_repair_allowed():
        raise Skip("TCP repair mode needs CAP_NET_ADMIN")
    import socket
    import threading
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        with conn, conn.makefile("rwb", buffering=0) as f:
            for line in f:
                f.write(b"pong " + line.split()[-1] + b"\n")

    threading.Thread(target=serve, daemon=True).start()
    rounds = 10
    job = ("import socket, sys, time\n"
           f"s = socket.create_connection(('127.0.0.1', {port}))\n"
           "f = s.makefile('rwb', buffering=0)\n"
           f"for i in range(1, {rounds} + 1):\n"
           "    f.write(b'ping %d\\n' % i)\n"
           "    print(i, f.readline().decode().strip(), flush=True)\n"
           "    time.sleep(0.15)\n")
    out = env.path("tcp_outside.out")
    ckpt = env.path("tcp_outside.ckpt")
    p = start([sys.executable, "-c", job], stdout_path=out)
    wait_lines(out, 3)
    env.snap_run("dump", "--kill", "--tcp-established", "--pid", str(p.pid), "-o", ckpt)
    p.wait()
    r = env.snap_run("restore", ckpt, check=False, timeout=60)
    expect(r.returncode != 0 and "leads outside the image" in r.stderr
           and "--tcp-established" in r.stderr,
           f"a restore without --tcp-established refuses: {r.stderr.strip()}")
    expect(not pid_alive(p.pid), "and nothing of the job runs")
    r = env.snap_run("restore", "--tcp-established", ckpt, check=False, timeout=60)
    expect(r.returncode == 0, f"restored with --tcp-established ({r.stderr.strip()})")
    expected = [f"{i} pong {i}" for i in range(1, rounds + 1)]
    expect(lines_of(out) == expected, f"the job went on with the same server: {lines_of(out)}")
    srv.close()


@case
def unix_dgram_to_outside(env):
    # A datagram socket connected to a named socket outside the job (here:
    # the test's, as a logging daemon's): restore connects it to that name
    # again, and the job's datagrams keep arriving there, in order.
    import socket
    path = env.path("outside.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    rounds = 10
    job = ("import socket, time\n"
           "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
           f"s.connect({path!r})\n"
           f"for i in range(1, {rounds} + 1):\n"
           "    s.send(b'tick %d' % i)\n"
           "    print(i, flush=True)\n"
           "    time.sleep(0.15)\n")
    dump_kill_restore(env, [sys.executable, "-c", job], "unix_dgram_outside", 3,
                      [str(i) for i in range(1, rounds + 1)])
    srv.settimeout(1)
    got = []
    try:
        while True:
            got.append(srv.recv(64).decode())
    except socket.timeout:
        pass
    srv.close()
    # The tick sent while the dump stopped the job may be the one printed
    # last before the kill: every tick arrives once, in order.
    expect(got == [f"tick {i}" for i in range(1, rounds + 1)],
           f"the outside socket got every datagram once, in order: {got}")


@case
def tcp_connections_leave_running(env):
    # A dump that leaves the job running takes its TCP connections out of
    # repair mode again without a packet: the job ends as an uninterrupted
    # run does, and the image restores the same way once it is gone.
    if not tcp_repair_allowed():
        raise Skip("TCP repair mode needs CAP_NET_ADMIN")
    rounds = 8
    out = env.path("tcp_live.out")
    p = start([sys.executable, env.src("tcp_pair.py"), str(rounds), "200"], stdout_path=out)
    wait_lines(out, 3)
    ckpt = env.path("tcp_live.ckpt")
    env.snap_run("dump", "--pid", str(p.pid), "-o", ckpt)
    p.wait(timeout=60)
    expect(p.returncode == 0 and lines_of(out) == tcp_pair_expected(rounds),
           f"the job ran on to the same end after the dump: {lines_of(out)}")
    print("ok   tcp_connections_leave_running: the job carried on untouched")


@case
def deleted_files_memfd(env):
    # A job writing to an unlinked sparse scratch file (two fds, a shared and
    # a private mapping), a sealed memfd (shared and private mappings), an
    # unlinked FIFO, a removed cwd and an O_PATH fd on a symbolic link
    # (tests/programs/ghosts.c): its output
    # after a restore equals an uninterrupted run's, line for line, and the
    # restore leaves no file behind in the job's directory.
    rounds = 12
    ref_dir, job_dir = env.path("ghosts_ref"), env.path("ghosts_job")
    os.makedirs(ref_dir)
    os.makedirs(job_dir)
    ref_out = env.path("ghosts_ref.out")
    ref = start([env.prog("ghosts"), ref_dir, str(rounds), "0"], stdout_path=ref_out)
    ref.wait()
    expected = lines_of(ref_out)
    expect(ref.returncode == 0 and len(expected) == rounds,
           f"the uninterrupted run finished ({ref.returncode}, {expected})")
    dump_kill_restore(env, [env.prog("ghosts"), job_dir, str(rounds), "150"], "ghosts", 4,
                      expected)
    expect(os.listdir(job_dir) == [], f"nothing left in the job's directory: {os.listdir(job_dir)}")


@case
def deleted_file_too_large_refused(env):
    # A memfd holding more than the 64 MiB of deleted-file data an image
    # keeps: the dump refuses, naming the pid, the fd and the memfd, writes
    # no image, and the job (dumped with --kill) runs on.
    out = env.path("bigmemfd.out")
    code = ("import os, sys, time\n"
            "fd = os.memfd_create('big')\n"
            "os.pwrite(fd, b'x' * (65 << 20), 0)\n"
            "print(fd, flush=True)\n"
            "time.sleep(120)\n")
    p = start([sys.executable, "-c", code], stdout_path=out)
    wait_lines(out, 1)
    fd = lines_of(out)[0]
    ckpt = env.path("bigmemfd.ckpt")
    r = env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt, check=False)
    expect(r.returncode != 0 and f"pid {p.pid} fd {fd} (/memfd:big (deleted))" in r.stderr
           and "64 MiB" in r.stderr,
           f"the dump is refused, naming pid, fd and memfd: {r.stderr.strip()}")
    expect(not os.path.exists(ckpt), "no image was written")
    expect(p.poll() is None, "the job is still running")
    p.kill()
    p.wait()


def snap_measured(env, *args):
    """Runs snap; returns (exit status, stderr, seconds, peak resident KiB of
    snap and of what it waited for), from wait4's rusage of that one child."""
    import time
    errpath = env.path("snap_measured.err")
    t0 = time.monotonic()
    with open(errpath, "w") as err:
        p = subprocess.Popen([env.snap, *args], stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    with open(errpath) as err:
        return p.returncode, err.read(), time.monotonic() - t0, usage.ru_maxrss


def sparse(env, tib, pages, assert_kib):
    """A job reserving TIB TiB with MAP_NORESERVE and PAGES pages touched
    (tests/programs/sparse.c): dumped with --kill, restored, its values
    intact and its reservations as they were."""
    name = f"sparse_{tib}tib"
    out = env.path(f"{name}.out")
    ckpt = env.path(f"{name}.ckpt")
    rounds = 6
    p = start([env.prog("sparse"), str(tib), str(pages), str(rounds), "300"], stdout_path=out)
    wait_for(lambda: p.poll() is not None or len(lines_of(out)) >= 3, 60, f"{name}: first rounds")
    if p.poll() == 3:
        raise Skip(f"the kernel refused a {tib} TiB MAP_NORESERVE reservation: {lines_of(out)}")
    rc, err, secs, kib = snap_measured(env, "dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
    expect(rc == 0, f"{name}: dump exited 0 (got {rc}; {err.strip()})")
    p.wait()
    print(f"info {name}: dump of {tib} TiB reserved, {pages} pages touched: {secs:.2f} s, "
          f"snap's peak memory {kib / 1024:.1f} MiB")
    if assert_kib:
        expect(kib <= assert_kib, f"{name}: snap dump's peak memory {kib} KiB <= {assert_kib} KiB")
    before = lines_of(out)
    expect(len(before) < rounds + 2, f"{name}: killed mid-run ({len(before)} lines)")
    rc, err, secs, kib = snap_measured(env, "restore", ckpt)
    expect(rc == 0, f"{name}: restored job exited 0 (got {rc}; {err.strip()}; output {lines_of(out)})")
    print(f"info {name}: restore and the rest of the run: {secs:.2f} s, peak memory (snap and "
          f"the job) {kib / 1024:.1f} MiB")
    if assert_kib:
        expect(kib <= assert_kib, f"{name}: snap restore's peak memory {kib} KiB <= {assert_kib} KiB")
    expected = ["ready"] + [str(i) for i in range(1, rounds + 1)] + ["done"]
    got = lines_of(out)
    if got != expected:
        raise AssertionError(f"{name}: output differs from an uninterrupted run\n"
                             f"before restore: {before}\nafter: {got}\nexpected: {expected}")
    print(f"ok   {name}: continued from line {len(before)}, values intact, reservations kept")


@case
def sparse_16tib(env):
    sparse(env, 16, 4096, 256 * 1024)


@case
def sparse_4tib(env):
    sparse(env, 4, 2048, None)  # timing printed, not asserted


@case
def sparse_leave_running(env):
    # A dump that lets the job run on keeps its sparse reservation out of the
    # copy-on-write snapshot (read while the job is stopped, far cheaper than
    # the fork copying its page tables): the job's own mapping is as it was
    # after the dump (no MADV_DONTFORK left on it) and it runs to the end;
    # the image restores and the job continues from the dump point.
    out = env.path("sparse_lr.out")
    ckpt = env.path("sparse_lr.ckpt")
    rounds = 8
    expected = ["ready"] + [str(i) for i in range(1, rounds + 1)] + ["done"]
    p = start([env.prog("sparse"), "4", "2048", str(rounds), "300"], stdout_path=out)
    wait_for(lambda: p.poll() is not None or len(lines_of(out)) >= 3, 60, "sparse: first rounds")
    if p.poll() == 3:
        raise Skip(f"the kernel refused a 4 TiB MAP_NORESERVE reservation: {lines_of(out)}")
    r = env.snap_run("dump", "-v", "--pid", str(p.pid), "-o", ckpt)
    expect("sparse reservation(s) kept out of the snapshot" in r.stderr,
           f"the reservation was kept out of the snapshot: {r.stderr.strip()}")
    with open(f"/proc/{p.pid}/smaps") as f:
        flags = [l.split()[1:] for l in f if l.startswith("VmFlags:")]
    expect(not any("dc" in fl for fl in flags), f"no mapping of the job is left MADV_DONTFORK: {flags}")
    p.wait()
    expect(p.returncode == 0 and lines_of(out) == expected,
           f"the job ran on to its end after the dump (exit {p.returncode}, {lines_of(out)})")
    r = env.snap_run("restore", ckpt, check=False, timeout=120)
    expect(r.returncode == 0 and lines_of(out) == expected,
           f"restored from the dump point, it ends as an uninterrupted run ({r.stderr.strip()}; "
           f"{lines_of(out)})")


@case
def deep_thread_stacks_leave_running(env):
    # A dump that lets the job run on reads the threads' small stacks while
    # the job is stopped, but leaves in the copy-on-write snapshot a stack
    # that holds many pages (2 MiB of recursion) and one carved from an
    # arena with 8 MiB of data: reading those while stopped would lengthen
    # the freeze by all they hold. Either way the image holds each stack as
    # it was at the stop: the threads keep changing their stacks after the
    # dump, and the restored job continues from the dump point.
    argv = [env.prog("deep_stacks"), "40", "50"]
    _, ref = uninterrupted(argv, timeout=120)
    expect(len(ref) == 42 and ref[-1] == "done", f"an uninterrupted run ends: {ref[-2:]}")
    out, ckpt = env.path("deep_stacks.out"), env.path("deep_stacks.ckpt")
    p = start(argv, stdout_path=out)
    wait_lines(out, 6)
    r = env.snap_run("dump", "-v", "--pid", str(p.pid), "-o", ckpt)
    left = re.search(r"(\d+) thread stack\(s\) left in the snapshot: (\d+) holding more than", r.stderr)
    expect(left and left.group(1) == "2" and left.group(2) == "2",
           f"the deep stack and the arena stay in the snapshot: {r.stderr.strip()}")
    kept = re.search(r"(\d+) thread stack and guard mapping\(s\) kept out", r.stderr)
    expect(kept and int(kept.group(1)) >= 2, f"the shallow stacks are kept out: {r.stderr.strip()}")
    p.wait()
    expect(p.returncode == 0 and lines_of(out) == ref,
           f"the job ran on to its end after the dump (exit {p.returncode}, {lines_of(out)[-2:]})")
    r = env.snap_run("restore", ckpt, check=False, timeout=120)
    expect(r.returncode == 0 and lines_of(out) == ref,
           f"restored from the dump point, it ends as an uninterrupted run ({r.stderr.strip()}; "
           f"{lines_of(out)[-2:]})")


if __name__ == "__main__":
    main()
