"""Shared helpers for snap's end-to-end tests (Python 3 standard library).

A test script imports this, declares cases with @case, and calls main().
Each case runs in its own meson test: `script.py SNAP PROGRAMS_DIR CASE`.
A case passes by returning, fails by raising, and is skipped (exit 77) by
raising Skip with the reason, which is printed.
"""
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77
CASES = {}


class Skip(Exception):
    pass


class Env:
    def __init__(self, snap, programs, source_programs):
        self.snap = snap
        self.programs = programs          # build dir of tests/programs
        self.sources = source_programs    # source dir of tests/programs
        self.tmp = tempfile.mkdtemp(prefix="snap-e2e-")

    def prog(self, name):
        return os.path.join(self.programs, name)

    def src(self, name):
        return os.path.join(self.sources, name)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def checkpoint_json(self, ckpt):
        """The image's checkpoint object (tests/e2e/image_json.cc)."""
        p = subprocess.run([self.image_json(), ckpt], capture_output=True, text=True, check=True)
        return json.loads(p.stdout)

    def put_checkpoint_json(self, ckpt, obj):
        """Makes `obj` the image's checkpoint, as if snap had written it."""
        path = self.path("checkpoint-edit.json")
        with open(path, "w") as f:
            json.dump(obj, f)
        subprocess.run([self.image_json(), ckpt, "--put", path], check=True)

    def image_json(self):
        return os.path.join(os.path.dirname(os.path.normpath(self.programs)), "e2e", "image-json")

    def snap_run(self, *args, timeout=120, check=True, **kw):
        p = subprocess.run([self.snap, *args], capture_output=True, text=True, timeout=timeout, **kw)
        if check and p.returncode != 0:
            raise AssertionError(f"snap {' '.join(args)} exited {p.returncode}\n"
                                 f"stdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def manifest(self, ckpt):
        """The image's whole manifest, checkpoint included (snap info
        --manifest: manifest.json and checkpoint.json.lz4 together)."""
        return json.loads(self.snap_run("info", ckpt, "--manifest").stdout)


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def make_subreaper():
    # PID 1 here never reaps orphans: collect them ourselves.
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_orphans():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wait_for(pred, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def lines_of(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def wait_lines(path, n, timeout=30.0):
    wait_for(lambda: len(lines_of(path)) >= n, timeout, f"{n} lines in {path}")


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        # A process that exits between the open and the read of its stat
        # file makes the read fail with ESRCH.
        return False


def live_pid(saved, timeout=10.0):
    """The pid this test sees for a restored process whose pid was `saved`.
    As root, restore gives it that very pid; as an ordinary user
    (SNAP_TEST_UNPRIVILEGED) it has it inside a new pid namespace, and
    another one here: the newest process of ours whose own-namespace pid
    (the last NSpid value, one level down) is `saved`."""
    if not os.environ.get("SNAP_TEST_UNPRIVILEGED"):
        return saved
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/status") as f:
                    st = f.read()
            except OSError:
                continue
            ns = next((l.split()[1:] for l in st.splitlines() if l.startswith("NSpid:")), [])
            uid = next((l.split()[1] for l in st.splitlines() if l.startswith("Uid:")), "")
            if len(ns) == 2 and ns[-1] == str(saved) and uid == str(os.getuid()):
                found.append(int(d))
        if found:
            return max(found)
        if time.monotonic() > deadline:
            raise AssertionError(f"no restored process has pid {saved} in its namespace")
        time.sleep(0.05)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok   {what}")


# Soft checks, for scripts that run many checks and report them all:
# check() records a failure and goes on; checks_result() is the exit code.
failures = []


def check(cond, what, proc=None):
    if cond:
        print(f"ok   {what}")
        return
    detail = ""
    if proc is not None:
        detail = f"\n  exit {proc.returncode}\n  stdout: {proc.stdout!r}\n  stderr: {proc.stderr!r}"
    print(f"FAIL {what}{detail}")
    failures.append(what)


def checks_result():
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    return 0


def main():
    if len(sys.argv) != 5:
        print(f"usage: {sys.argv[0]} SNAP PROGRAMS_BUILD_DIR PROGRAMS_SOURCE_DIR CASE")
        print("cases: " + " ".join(CASES))
        sys.exit(2)
    snap, programs, sources, name = sys.argv[1:]
    make_subreaper()
    env = Env(os.path.abspath(snap), programs, sources)
    outcome = None  # "pass" or "skip"; None: failed
    try:
        CASES[name](env)
        outcome = "pass"
    except Skip as e:
        print(f"SKIP {name}: {e}")
        outcome = "skip"
    finally:
        # Leave nothing running behind, and no files but a failure's (its
        # images and outputs, to look at).
        for p in list(_started):
            if p.poll() is None:
                p.kill()
                p.wait()
        reap_orphans()
        if outcome:
            shutil.rmtree(env.tmp, ignore_errors=True)
        else:
            print(f"kept for inspection: {env.tmp}")
    if outcome == "skip":
        sys.exit(SKIP)
    print(f"PASS {name}")


_started = []


class PingServer:
    """A TCP server outside the job on 127.0.0.1 (threads of this test):
    answers each line "... N" with "pong N", on any number of connections;
    `accepted` counts them."""
    def __init__(self):
        import socket
        import threading
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.port = self.srv.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import threading
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    @staticmethod
    def _answer(conn):
        with conn, conn.makefile("rwb", buffering=0) as f:
            for line in f:
                f.write(b"pong " + line.split()[-1] + b"\n")

    def close(self):
        self.srv.close()


class HugetlbPool:
    """`with HugetlbPool(n):` n pages of the default size in the hugetlb
    pool for the block: root adds n (its own, so that tests running at once
    do not share them) and takes them back after; anyone else needs n
    free, or skips."""
    PATH = "/proc/sys/vm/nr_hugepages"

    def __init__(self, pages):
        self.pages, self.added = pages, 0

    def __enter__(self):
        if os.geteuid() != 0 or os.environ.get("SNAP_TEST_UNPRIVILEGED"):
            free = next((int(l.split()[1]) for l in open("/proc/meminfo")
                         if l.startswith("HugePages_Free:")), 0)
            if free >= self.pages:
                return self
            raise Skip(f"the hugetlb pool has {free} free page(s), {self.pages} needed, and only "
                       "root may add some")
        try:
            before = int(open(self.PATH).read())
            with open(self.PATH, "w") as f:
                f.write(str(before + self.pages))
        except OSError as e:
            raise Skip(f"cannot add pages to the hugetlb pool here ({self.PATH}: {e.strerror})")
        self.added = int(open(self.PATH).read()) - before
        if self.added < self.pages:
            self.__exit__()
            raise Skip("the kernel could not give the hugetlb pool the pages this test needs")
        return self

    def __exit__(self, *exc):
        if self.added:
            before = int(open(self.PATH).read())
            with open(self.PATH, "w") as f:
                f.write(str(max(0, before - self.added)))
            self.added = 0
        return False


def start_job(env, name, argv, lines, timeout=30.0, **kw):
    """Starts argv with stdout to NAME.out and waits for its first `lines`
    lines; returns (process, output path)."""
    out = env.path(f"{name}.out")
    p = start(argv, stdout_path=out, **kw)
    wait_lines(out, lines, timeout)
    return p, out


def start(argv, stdout_path=None, stdin_path=None, **kw):
    """Starts a program the test owns (killed at the end if still running)."""
    stdout = open(stdout_path, "w") if stdout_path else subprocess.DEVNULL
    stdin = open(stdin_path) if stdin_path else subprocess.DEVNULL
    p = subprocess.Popen(argv, stdout=stdout, stdin=stdin, stderr=subprocess.STDOUT, **kw)
    _started.append(p)
    return p


def expect_dump_refused(env, p, name, words, what):
    """`snap dump --kill` of p (a job the test started) into NAME.ckpt must be
    refused with every one of `words` in its message (`what` says what it
    names), write no image and leave the job running; the job is then ended.
    Returns the dump's result."""
    ckpt = env.path(f"{name}.ckpt")
    r = env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt, check=False)
    expect(r.returncode != 0 and all(w in r.stderr for w in words),
           f"the dump is refused, naming {what}: {r.stderr.strip()}")
    expect(not os.path.exists(ckpt), "no image was written")
    expect(p.poll() is None, "the job is still running")
    p.kill()
    p.wait()
    return r
