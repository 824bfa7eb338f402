"""bench-floor (scripts/bench/floor.c) in the bench: which of its runs
explain which rows, running them right after those rows, and the section
that sets the machine's floors against the freezes measured in the same
run."""
import os
import subprocess
import sys

import report

FLOOR_MODES = {"threads": ("ptrace", "threads"), "maps": ("maps",)}


def runs_for(wl):
    """bench-floor's (mode, size) runs for a row: by its shape (threads=,
    maps=), and the memory mode for the memory group's one-process jobs
    that have written every page of their data (random, zero90, text: the
    fork's dearest case, as in their first dump), with the fork and with a
    userfaultfd write-protect in its place; none for the others."""
    shape = dict(kv.split("=", 1) for kv in wl.shape)
    runs = [(mode, shape[key]) for key, modes in FLOOR_MODES.items() if key in shape
            for mode in modes]
    if (wl.kind == "c" and wl.procs == 1 and not wl.shape and "memory" in wl.groups
            and "untouched" not in (wl.mix or "")):
        runs += [("memory", str(wl.mib)), ("memory-wp", str(wl.mib))]
    return runs


def run(args, selected):
    """bench-floor for the rows of many threads or mappings and those of
    written memory, right after them in the same run: what this
    machine charges for such a job's freeze with no tool's own work in it
    (scripts/bench/floor.c); a size measured once serves every row of it.
    Returns [(workload, {mode: {key: float}} or an error text)]."""
    out, done = [], {}
    rounds = 3 if args.sizes == "small" else 7
    for wl in selected:
        runs = runs_for(wl)
        if not runs:
            continue
        if not os.access(args.floor, os.X_OK):
            out.append((wl, f"{args.floor} is missing (built with bench-workload)"))
            continue
        got = {}
        for mode, size in runs:
            if (mode, size) not in done:
                done[mode, size] = run_once(args, mode, size, rounds)
                print(f"bench: floor {mode} {size}: {done[mode, size]}", file=sys.stderr)
            if isinstance(done[mode, size], str):
                got = done[mode, size]
                break
            got[mode] = done[mode, size]
        out.append((wl, got))
    return out


def run_once(args, mode, size, rounds):
    """One bench-floor run: its medians {key: float}, {"unavailable": why}
    where the machine does not offer the mode's mechanism (exit 3), or what
    went wrong."""
    try:
        r = subprocess.run([args.floor, mode, size, str(rounds)],
                           capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return f"bench-floor {mode} {size} took over 120 s"
    if r.returncode == 3:  # the mode's mechanism is not available here
        return {"unavailable": (r.stderr.strip().splitlines() or ["exit 3"])[-1]}
    line = r.stdout.strip().splitlines()[-1:] if r.returncode == 0 else []
    if not line or not line[0].startswith("floor "):
        return f"bench-floor {mode} {size} failed: " + \
            (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
    return {k: float(v) for k, v in (kv.split("=", 1) for kv in line[0].split() if "=" in kv)}


def cell(got):
    """bench-floor's medians for one row, in words (ms)."""
    if isinstance(got, str):
        return got
    parts = []
    if "ptrace" in got:
        f = got["ptrace"]
        parts.append(f"ptrace: stop {f['stop_ms']:.1f}, one system call in each thread "
                     f"{f['call_ms']:.1f}, let go {f['detach_ms']:.1f}; the job's stall "
                     f"{f['gap_ms']:.1f}")
    if "threads" in got:
        f = got["threads"]
        parts.append(f"in the job: every thread runs code and waits {f['park_ms']:.1f}, "
                     f"fork {f['fork_ms']:.1f}, main thread's stall {f['gap_ms']:.1f}")
    if "memory" in got:
        f = got["memory"]
        parts.append(f"in the job: the main thread parked {f['park_ms']:.1f}, fork of "
                     f"{f['memory']:.0f} MiB written {f['fork_ms']:.1f}, main thread's stall "
                     f"{f['gap_ms']:.1f}")
    if "memory-wp" in got:
        f = got["memory-wp"]
        if "unavailable" in f:
            parts.append(f"userfaultfd write-protect instead of the fork: not measurable here "
                         f"({f['unavailable']})")
        else:
            parts.append(f"userfaultfd write-protect instead of the fork {f['wp_ms']:.1f}, "
                         f"main thread's stall {f['gap_ms']:.1f}")
    if "maps" in got:
        f = got["maps"]
        parts.append(f"/proc/PID/maps {f['maps_ms']:.1f} + fork {f['fork_ms']:.1f} "
                     f"= {f['sum_ms']:.1f}")
    return "; ".join(parts)


def section(floors, results, names):
    """What the machine charges for the freeze of the shapes' jobs and of
    the jobs of written memory, against the freezes measured in the same run
    (ms)."""
    freezes = {wl.name: per_tool for wl, per_tool in results}
    other = names[1] if len(names) > 1 else None
    rounds = next((int(f["rounds"]) for _, got in floors if isinstance(got, dict)
                   for f in got.values() if "rounds" in f), 0)
    head = ["workload", "snap freeze"] + ([f"{other} freeze", f"0.1 × {other}"] if other else []) \
        + [f"floor (bench-floor, medians of {rounds} rounds)"]
    out = ["### What this machine charges for these freezes (ms, this run)", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for wl, got in floors:
        per_tool = freezes.get(wl.name, {})
        cells = [wl.label]
        for name in names[:2]:
            v = report.median_of(per_tool.get(name, []), "freeze")
            cells.append(f"{v * 1e3:.0f}" if v is not None else "–")
            if name == other:
                cells.append(f"{v * 1e2:.0f}" if v is not None else "–")
        cells.append(cell(got))
        out.append("| " + " | ".join(cells) + " |")
    out += ["",
            "`bench-floor` (scripts/bench/floor.c) runs the same shapes with no",
            "checkpointer's own work: *ptrace* stops every thread of such a job from",
            "outside, has each make one system call (prctl(PR_GET_TID_ADDRESS), state",
            "only the thread can tell) and lets them go, main thread first: the least a",
            "ptrace checkpointer does, with nothing else read and no snapshot (the job's",
            "stall there has no fork in it); *in the job* every thread runs a signal handler that reads",
            "its sigaltstack and clear-child-tid address (the per-thread state only the",
            "thread itself can tell) and waits, the process forks, the threads are let",
            "go, main thread first; for mappings, one read of /proc/PID/maps (how the",
            "mappings are learnt while the job is stopped) and one fork (the",
            "copy-on-write snapshot); for written memory, a one-thread job that has just",
            "written every page of its data (by its own stores, as a job does) parked",
            "by a signal while the process forks, and again with the fork replaced by",
            "the other copy-on-write snapshot, the data registered with a userfaultfd",
            "and write-protected (UFFDIO_WRITEPROTECT). A tool that stops the threads with",
            "ptrace, runs code in each and forks a snapshot pays at least the ptrace",
            "stop, the threads' own code and the fork; one that reads the mappings",
            "while the job is stopped and forks, at least the maps text and the fork;",
            "one that forks a snapshot of written memory, at least that fork, and one",
            "that write-protects it instead, at least the write-protect. Going below",
            "that takes another mechanism, not a faster version of the same one."]
    return "\n".join(out)
