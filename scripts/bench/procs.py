"""The processes of the bench's runs: the job's side of the report protocol
(Job), running a tool's command measured, the --step-limit on every wait
and what a wait that runs out prints, and the bytes, caches and ends of
the processes and images involved."""
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time


class RunError(Exception):
    """A step of a run that failed: `cell` is what the table shows in
    `column` (in every column when None: the job never ran), `why` the
    reason listed under the tables."""

    def __init__(self, cell, why, column=None):
        super().__init__(why)
        self.cell, self.column = cell, column


class Job:
    """One started job: its fifo, request file and processes."""

    def __init__(self, rundir):
        self.dir = rundir
        self.fifo = os.path.join(rundir, "reports")
        os.mkfifo(self.fifo)
        self.req = 0
        self.write_request()
        # Read and write end in one: the fifo never reports EOF between jobs.
        self.fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
        self.buf = b""
        self.proc = None
        self.restore_proc = None
        self.pids = []
        self.fields = {}

    def write_request(self, rewrite=None):
        tmp = os.path.join(self.dir, "request.tmp")
        with open(tmp, "w") as f:
            f.write(str(self.req) + (f" rewrite={rewrite}" if rewrite else ""))
        os.rename(tmp, os.path.join(self.dir, "request"))

    def line(self, timeout, alive=None):
        """The next report line, or None after `timeout` s, or when `alive`
        (a Popen) has exited with no line pending."""
        deadline = time.monotonic() + limited(timeout)
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                if STEP_LIMIT is not None:
                    diagnose(f"no line from the job within {limited(timeout):.0f} s",
                             self.pids + [p.pid for p in (self.proc, self.restore_proc) if p])
                return None
            r, _, _ = select.select([self.fd], [], [], min(left, 0.05))
            if r:
                self.buf += os.read(self.fd, 65536)
            elif alive is not None and alive.poll() is not None and alive.returncode != 0:
                return None
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def drain(self):
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass
        self.buf = b""

    def report(self, timeout, rewrite=None):
        """Ask for a report (first rewriting `rewrite` % of the job's pages,
        when given); returns (seq, maxgap s, verified). The report's fields
        are left in self.fields."""
        self.req += 1
        self.write_request(rewrite)
        timeout = limited(timeout)
        deadline = time.monotonic() + timeout
        while True:
            line = self.line(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise RunError("FAIL", f"no report {self.req} within {timeout:.0f} s")
            f = fields(line)
            if line.startswith("report") and int(f.get("req", 0)) == self.req:
                self.fields = f
                return int(f["seq"]), int(f["maxgap_us"]) / 1e6, f["verify"] == "OK"

    def close(self):
        os.close(self.fd)


def fields(line):
    return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)


def direct_children(pid):
    """The children of pid (of any of its threads)."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def children(pid):
    """pid and its descendants, parents first."""
    out = [pid]
    for p in out:
        out += direct_children(p)
    return out


def pss_bytes(pids):
    total = 0
    for p in pids:
        with open(f"/proc/{p}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
    return total


def kill_and_reap(pids, *procs):
    """SIGKILL every pid, then reap: our Popen children through wait(), the
    others (orphans re-parented to us, the subreaper) through waitpid."""
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for proc in procs:
        if proc is None:
            continue
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    mine = {proc.pid for proc in procs if proc is not None}
    for p in pids:
        if p in mine:
            continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if os.waitpid(p, os.WNOHANG)[0] == p:
                    break
            except ChildProcessError:  # not ours: whoever restored it reaps it
                if not os.path.exists(f"/proc/{p}"):
                    break
            time.sleep(0.01)


def tree_bytes(path):
    """Bytes of the files under path, but the tools' logs (*.log)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            if not name.endswith(".log"):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def drop_from_cache(path):
    for dirpath, _, files in os.walk(path):
        for name in files:
            if not stat.S_ISREG(os.lstat(os.path.join(dirpath, name)).st_mode):
                continue  # a series' control socket, its latest link
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)  # a no-op for snap, which fsyncs; others may not
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# --step-limit: the most seconds any one wait may take (None: the waits'
# own limits), and the run's log for what each step was doing when one ran
# out (the smoke run inside meson's own timeout).
STEP_LIMIT = None


def limited(timeout):
    return timeout if STEP_LIMIT is None else min(timeout, STEP_LIMIT)


def diagnose(what, pids):
    """Prints to stderr, for a wait that ran out: every thread of pids and
    of their descendants, with its state, wait channel and kernel stack."""
    print(f"bench: {what}: threads of the processes involved:", file=sys.stderr)
    seen = set()
    for root in pids:
        for p in children(root):
            if p in seen:
                continue
            seen.add(p)
            try:
                tids = sorted(os.listdir(f"/proc/{p}/task"), key=int)
            except OSError:
                continue
            for tid in tids:
                base = f"/proc/{p}/task/{tid}"
                try:
                    with open(f"{base}/stat") as f:
                        st = f.read()
                    comm = st[st.index("(") + 1:st.rindex(")")]
                    state = st[st.rindex(")") + 2]
                    with open(f"{base}/wchan") as f:
                        wchan = f.read().strip()
                    try:
                        with open(f"{base}/stack") as f:
                            stack = " < ".join(l.split()[1].split("+")[0] for l in f if l.strip())
                    except OSError:
                        stack = "?"
                except (OSError, ValueError, IndexError):
                    continue
                print(f"  pid {p} tid {tid} ({comm}) {state} wchan={wchan} stack: {stack}",
                      file=sys.stderr)


def tail(*paths, n=3):
    """The last n non-empty lines of each file that exists, joined by " / "."""
    out = []
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                out += [l.strip() for l in f if l.strip()][-n:]
        except OSError:
            pass
    return " / ".join(out)


PR_SET_CHILD_SUBREAPER = 36


def set_subreaper(on):
    """Makes this process the one that inherits orphaned descendants (or
    not), so that it can wait for what a command leaves running."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0)


def own_children():
    """The pids whose parent is this process."""
    return set(direct_children(os.getpid()))


def run_measured(argv, logpath, watch=(), leftovers=False):
    """Runs argv with its output to logpath; returns (exit status, wall s,
    peak resident bytes of the biggest single process among it and the
    children it waited for: wait4's ru_maxrss). Past --step-limit it is
    killed, and the threads of it and of `watch` (pids) are described.
    With `leftovers`, processes it leaves running when it exits (snap dump's
    child that unprotects the job's memory) are waited for before this
    returns, outside the wall time: whatever they do to the job happens
    before the job is asked for its report."""
    watch = list(watch)
    before = own_children() if leftovers else set()
    if leftovers:
        set_subreaper(True)
    try:
        return _run_measured(argv, logpath, watch, before, leftovers)
    finally:
        if leftovers:
            set_subreaper(False)


def _run_measured(argv, logpath, watch, before, leftovers):
    with open(logpath, "w") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        timer = None
        if STEP_LIMIT is not None:
            def expire():
                diagnose(f"{argv[0]} still running after {STEP_LIMIT:.0f} s, killed "
                         f"(its log: {tail(logpath)})", [proc.pid] + watch)
                proc.kill()
            timer = threading.Timer(STEP_LIMIT, expire)
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        if timer:
            timer.cancel()
        wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if leftovers:
        deadline = time.monotonic() + (STEP_LIMIT or 600)
        while time.monotonic() < deadline:
            left = own_children() - before - {proc.pid}
            if not left:
                break
            for pid in left:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            time.sleep(0.01)
    return proc.returncode, wall, usage.ru_maxrss * 1024


def describe_run_processes(rundir):
    """Prints to stderr every process whose command line names the run's
    directory (the job, what restored it, anything else writing to its
    fifo), with its parent, state and age: for a restored job that does not
    say what it should."""
    print(f"bench: processes of {rundir}:", file=sys.stderr)
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    for pid in sorted((int(p) for p in os.listdir("/proc") if p.isdigit())):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            if rundir not in cmd:
                continue
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
            rest = st[st.rindex(")") + 2:].split()
            state, ppid, start = rest[0], rest[1], int(rest[19])
            print(f"  pid {pid} ppid {ppid} {state} running {uptime - start / ticks:.1f} s: {cmd}",
                  file=sys.stderr)
        except (OSError, ValueError, IndexError):
            continue


def anon_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("AnonPages:"):
                return int(line.split()[1]) << 10
    return 0


class AnonPeak:
    """The peak extra memory of a dump: the machine's AnonPages, sampled
    every 10 ms while it runs, above its level at the start (the tool's own
    memory and a snapshot's copies of pages the job writes alike; anything
    else running on the machine counts too)."""

    def __enter__(self):
        self.base, self.peak, self._done = anon_bytes(), 0, threading.Event()

        def sample():
            while not self._done.is_set():
                self.peak = max(self.peak, anon_bytes() - self.base)
                time.sleep(0.01)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        return False
