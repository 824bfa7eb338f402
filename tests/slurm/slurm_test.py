#!/usr/bin/env python3
"""snap under a real Slurm (issue #12): starts a one-node Slurm here
(scripts/slurm/local-slurm), submits batch scripts like
scripts/slurm/example.sbatch with a 1-minute limit and `--signal=B:USR1@30`,
lets Slurm signal them, snap checkpoint and requeue them until they end, and
checks the output: every number exactly once, in order, across all runs --
the same as an uninterrupted run. Jobs, in parallel:
  root       the counter, checkpoints only on the signal
  nobody     the same submitted by uid 65534 (runs in a user+pid namespace)
  pipeline   a process tree: a shell pipeline `counter | cat`
  interval   the counter with --interval 5 periodic checkpoints, and
             `snap watch --file` beside it in the batch script
Skipped (77, with the reason) when not root or when Slurm cannot be
installed. Always stops the daemons it started.
Usage: slurm_test.py SNAP SOURCE_ROOT"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SNAP, SRC = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
LOCAL = os.path.join(SRC, "scripts", "slurm", "local-slurm")
COUNTER = os.path.join(SRC, "tests", "programs", "counter.py")
N, PERIOD_MS = 140, 500  # 70 s of counting: at least 3 runs of at most ~30 s each
PY = "/usr/bin/python3"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def sh(*argv, user=None, **kw):
    return subprocess.run((NOBODY if user else []) + list(argv), check=True, text=True,
                          capture_output=True, **kw).stdout


def script(workdir, program, before="", interval=0):
    """A batch script as a user writes it from scripts/slurm/example.sbatch."""
    return f"""#!/bin/bash
#SBATCH --time=1
#SBATCH --signal=B:USR1@30
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output={workdir}/out.txt
#SBATCH --error={workdir}/err.txt
{before}
exec {SNAP} slurm --dir {workdir}/ckpt --interval {interval} -- {program}
"""


def submit(name, base, program, user=None, **extra):
    workdir = os.path.join(base, name)
    os.mkdir(workdir)
    if user:
        os.chown(workdir, 65534, 65534)
    path = os.path.join(workdir, "job.sbatch")
    with open(path, "w") as f:
        f.write(script(workdir, program, **extra))
    os.chmod(path, 0o755)
    out = sh("sbatch", "--parsable", "-D", workdir, path, user=user, cwd=workdir)
    job = out.strip().split(";")[0]
    print(f"{name}: job {job} in {workdir}", flush=True)
    return {"name": name, "job": job, "dir": workdir}


def job_state(job):
    r = subprocess.run(["scontrol", "-o", "show", "job", job], text=True, capture_output=True)
    fields = dict(w.split("=", 1) for w in r.stdout.split() if "=" in w)
    return fields.get("JobState", "GONE"), fields.get("ExitCode", ""), fields.get("Restarts", "0")


def check(j):
    out = open(os.path.join(j["dir"], "out.txt")).read()
    err = open(os.path.join(j["dir"], "err.txt")).read()
    expected = "".join(f"{i}\n" for i in range(1, N + 1))
    resumed = err.count("snap run: resumed pid")
    requeues = err.count("snap run: scontrol requeue")
    problems = []
    if out != expected:
        lines = out.splitlines()
        problems.append(f"output is not 1..{N} exactly once: {len(lines)} lines, "
                        f"first differences: {[(i + 1, l) for i, l in enumerate(lines) if l != str(i + 1)][:5]}")
    if requeues < 2 or resumed < 2:
        problems.append(f"only {requeues} requeue(s) and {resumed} resume(s); wanted 2 or more")
    if j["state"] != "COMPLETED" or not j["exit"].startswith("0:"):
        problems.append(f"job ended {j['state']} with exit code {j['exit']}")
    status = "ok" if not problems else "FAILED"
    print(f"{j['name']}: {status}: job {j['job']}, {requeues} requeues, {resumed} resumes, "
          f"{j['state']} {j['exit']} in {j['seconds']:.0f} s", flush=True)
    for p in problems:
        print(f"  {p}")
    if problems:
        print(f"  --- {j['name']} err.txt ---\n{err}")
    return not problems


def main():
    if os.geteuid() != 0:
        print("SKIP: starting Slurm's daemons (and becoming uid 65534) needs root")
        return 77
    t0 = time.monotonic()
    started = subprocess.run([LOCAL, "start"])
    if started.returncode == 77:
        print("SKIP: local Slurm could not be started here (see above)")
        return 77
    jobs = []
    base = tempfile.mkdtemp(prefix="snap-slurm-", dir="/var/tmp")
    os.chmod(base, 0o755)
    try:
        if started.returncode != 0:
            print("local Slurm did not start")
            return 1
        print(f"local Slurm up in {time.monotonic() - t0:.0f} s", flush=True)
        counter = f"{PY} {COUNTER} {N} {PERIOD_MS}"
        t1 = time.monotonic()
        jobs = [
            submit("root", base, counter),
            submit("nobody", base, counter, user=True),
            submit("pipeline", base, f"/bin/sh -c '{counter} | cat'"),
            submit("interval", base, counter,
                   interval=5, before=f"{SNAP} watch --file {base}/interval/signal.myfile --dir {base}/interval/ckpt &"),
        ]
        touched = False
        deadline = t1 + 480
        while time.monotonic() < deadline:
            pending = 0
            for j in jobs:
                if "state" in j:
                    continue
                state, code, _ = job_state(j["job"])
                if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                             "OUT_OF_MEMORY", "GONE"):
                    j.update(state=state, exit=code, seconds=time.monotonic() - t1)
                else:
                    pending += 1
            # One checkpoint asked through snap watch --file while the job runs.
            if not touched and time.monotonic() - t1 > 15:
                open(f"{base}/interval/signal.myfile", "w").close()
                touched = True
            if not pending:
                break
            time.sleep(1)
        ok = True
        for j in jobs:
            if "state" not in j:
                print(f"{j['name']}: job {j['job']} did not end in 8 minutes: {job_state(j['job'])}")
                print(open(os.path.join(j["dir"], "err.txt")).read())
                ok = False
                continue
            ok = check(j) and ok
        if os.path.exists(f"{base}/interval/signal.myfile"):
            print("interval: snap watch did not take signal.myfile")
            ok = False
        print(f"slurm suite: {'passed' if ok else 'FAILED'} in {time.monotonic() - t0:.0f} s "
              f"(jobs {time.monotonic() - t1:.0f} s)")
        return 0 if ok else 1
    finally:
        for j in jobs:
            subprocess.run(["scancel", j["job"]], capture_output=True)
        for _ in range(30):
            if all(job_state(j["job"])[0] not in ("RUNNING", "COMPLETING", "PENDING", "REQUEUED")
                   for j in jobs):
                break
            time.sleep(1)
        subprocess.run([LOCAL, "stop"])
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    # meson's timeout sends SIGTERM: still stop the daemons (finally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("SIGTERM: stopping"))
    sys.exit(main())
