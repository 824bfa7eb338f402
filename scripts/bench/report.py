"""The markdown tables of scripts/bench/bench.

`results` is a list of (workload, per_tool): workload a workloads.Workload at
the size that ran, per_tool {tool name: [one dict per run]}. A run's dict
holds numbers under the column keys, or a string cell ("FAIL", "not yet",
"refused") where that step gave no number, and "error"/"why" with the
reason."""
import statistics

COLUMNS = [("dump", "s"), ("freeze", "s"), ("extra", "MiB"), ("tool", "MiB"), ("image", "MiB"),
           ("ratio", ""), ("restore", "s"), ("rate", "MiB/s")]
HEADERS = {"dump": "dump s", "freeze": "freeze s", "extra": "extra MiB", "tool": "tool MiB",
           "image": "image MiB", "ratio": "image/memory", "restore": "restore s",
           "rate": "MiB/s"}
MIB_KEYS = ("image", "image1", "memory", "resident", "extra", "tool")
RATIO_KEYS = ("dump", "restore", "freeze", "image")


def fmt_value(key, v):
    if key in MIB_KEYS:
        return f"{v / 2**20:.0f}" if v >= 10 << 20 else f"{v / 2**20:.1f}"
    if key == "ratio":
        return f"{v:.2f}"
    if key == "rate":
        return f"{v:.0f}"
    if key in ("image_share", "dump_share", "rewrote", "changed"):  # percent
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(runs, key):
    """median (min–max) over the runs, or the first non-number cell."""
    vals = [r.get(key) for r in runs]
    for v in vals:
        if isinstance(v, str):
            n = sum(1 for x in vals if x == v)
            return v if n == len(vals) else f"{v} ({n}/{len(vals)})"
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    med = fmt_value(key, statistics.median(vals))
    if len(vals) == 1:
        return med
    lo, hi = fmt_value(key, min(vals)), fmt_value(key, max(vals))
    return med if lo == hi else f"{med} ({lo}–{hi})"


def median_of(runs, key):
    vals = [r.get(key) for r in runs]
    if not vals or any(not isinstance(v, (int, float)) for v in vals):
        return None
    return statistics.median(vals)


def failed_cell(runs, key):
    """The string cell of the first run that has one for key, or None."""
    for r in runs:
        if isinstance(r.get(key), str):
            return r[key]
    return None


def table(results, tool):
    cols = [k for k, _ in COLUMNS]
    out = ["| workload | memory MiB | resident MiB | " + " | ".join(HEADERS[k] for k in cols)
           + " |", "|" + "---|" * (len(cols) + 3)]
    for wl, per_tool in results:
        runs = per_tool.get(tool)
        if runs is None:  # a row this tool does not run (the series: snap's own)
            out.append(f"| {wl.label} |" + " – |" * (len(cols) + 2))
            continue
        out.append(f"| {wl.label} | {fmt_value('memory', wl.mib << 20)} | "
                   f"{cell(runs, 'resident')} | " + " | ".join(cell(runs, k) for k in cols) + " |")
    return "\n".join(out)


def ratio_cell(runs_a, runs_b, a, b, key):
    x, y = median_of(runs_a, key), median_of(runs_b, key)
    if x is not None and y:
        return f"{x / y:.2f}"
    for name, runs in ((a, runs_a), (b, runs_b)):
        bad = failed_cell(runs, key)
        if bad:
            return f"{name} {bad}"
    return "–"


def ratio_text(r, limit):
    """r to two decimals, or as many more (up to six) as it takes not to
    read as meeting a limit it misses."""
    for digits in range(2, 7):
        text = f"{r:.{digits}f}"
        if float(text) > limit:
            return text
    return text


def targets_cell(wl, runs_a, runs_b):
    """Which of issue #13's targets this row misses ("met" when none)."""
    misses, unknown = [], []
    for key, limit in wl.targets.items():
        x, y = median_of(runs_a, key), median_of(runs_b, key)
        if x is None or not y:
            unknown.append(key)
        elif x / y > limit:
            misses.append(f"{key} {ratio_text(x / y, limit)} > {limit:g}")
    if wl.tool_mib_max is not None:
        mib = median_of(runs_a, "tool")
        if mib is None:
            unknown.append("tool MiB")
        elif mib / 2**20 > wl.tool_mib_max:
            misses.append(f"tool {mib / 2**20:.0f} MiB > {wl.tool_mib_max:g}")
        restored = median_of(runs_a, "restore")
        if restored is None:
            misses.append("no restore")
    if not wl.targets and wl.tool_mib_max is None:
        return ""
    text = "; ".join(misses) if misses else ("met" if not unknown else "")
    if unknown:
        text += ("; " if text else "") + "no figure for " + ", ".join(unknown)
    return text


def ratio_table(results, a, b):
    out = ["| workload | " + " | ".join(RATIO_KEYS) + " | issue #13 targets |",
           "|" + "---|" * (len(RATIO_KEYS) + 2)]
    for wl, per_tool in results:
        if a not in per_tool or b not in per_tool:
            continue
        runs_a, runs_b = per_tool[a], per_tool[b]
        cells = [ratio_cell(runs_a, runs_b, a, b, key) for key in RATIO_KEYS]
        out.append(f"| {wl.label} | " + " | ".join(cells)
                   + f" | {targets_cell(wl, runs_a, runs_b)} |")
    return "\n".join(out)


def target_notes():
    return ["Targets (issue #13's done-when, snap / other of the medians): on every row",
            "dump ≤ 1.0, restore ≤ 1.0, freeze ≤ 0.1, image ≤ 1.0; the 4 TiB reservation",
            "dump ≤ 2.0 only; the 16 TiB one: snap's own memory for the dump (tool MiB)",
            "≤ 256 MiB, and it restores."]


def errors(results):
    out = []
    for wl, per_tool in results:
        for tool, runs in per_tool.items():
            for i, r in enumerate(runs, 1):
                why = r.get("error") or r.get("why")
                if why:
                    out.append(f"- {wl.name} ({tool}, run {i}): {why}")
    return out


def incremental_notes(results):
    """Below the table: the incremental row against its first checkpoint."""
    out = []
    for wl, per_tool in results:
        runs = [r for r in per_tool.get("snap", []) if "error" not in r]
        if wl.kind != "incremental" or not runs:
            continue
        pct = lambda key: cell([{key: r[key] * 100} for r in runs], key)
        by = ", ".join(sorted({r["by"] for r in runs}))
        out += ["", f"{wl.label}: the job rewrote {pct('rewrote')} % of its pages between its "
                    f"checkpoints; checkpoint 2 read {pct('changed')} % of its pages as written "
                    f"since checkpoint 1 (the rewritten ones and those its 1 ms loop wrote; "
                    f"changed pages by {by}).",
                "", "| | checkpoint 1 | checkpoint 2 | 2nd / 1st |", "|---|---|---|---|",
                f"| bytes added, MiB | {cell(runs, 'image1')} | {cell(runs, 'image')} "
                f"| {pct('image_share')} % |",
                f"| snap checkpoint --wait, s | {cell(runs, 'dump1')} | {cell(runs, 'dump')} "
                f"| {pct('dump_share')} % |",
                f"| freeze, s | {cell(runs, 'freeze1')} | {cell(runs, 'freeze')} | |"]
    return out


SCALING_NOTES = """How the work is spread over workers (`--jobs N`, default: the CPUs snap
may run on), and what would limit it on a node with 32-128 cores and a
parallel file system:

- **Dump.** N threads read the job's memory (from its copy-on-write
  snapshot, with process_vm_readv or /proc/PID/mem, a stretch of pages
  each), skip zero pages, hash the rest (XXH3-128), look them up in one
  shared table (under one lock, held for the lookup and a place in a
  block, not for the copy), copy them into 64-page blocks and compress
  each full block where it pays; the finished blocks are appended in
  order (raw ones joined into blocks of up to 4 MiB, one checksum each)
  with 4 MiB O_DIRECT writes while a thread of its own fdatasyncs behind
  them. Hashing (XXH3: several GB/s a core) and lz4 (far slower on
  compressible data; incompressible blocks are recognised from 1 % of
  their bytes and stored raw) spread over the workers; what stays serial
  is the table lookup (per page, under the lock) and the one ordered
  stream of pages.bin, which at tens of GB/s would need several files
  (one per worker, striped over the file system's targets) instead of one.
- **Restore.** 2N threads (two a worker: one reads while the other
  writes, so that the disk always has a read in flight) each take a block,
  read it (O_DIRECT when not cached), check it and decompress it, and
  write its pages straight into the restored process (process_vm_writev);
  no thread waits for another.
  What limits it is the kernel's page-fault path of the one process being
  filled (per-VMA locks let faults in different mappings proceed at once;
  faults in one huge mapping share its lock), and the file system's read
  bandwidth.
- **Freeze.** The parts done while the job is stopped (seizing threads,
  registers, the parasite, fds, the snapshot's fork) do not use the
  workers: they scale with the job's threads, fds and page tables, not
  with the cores."""


def scaling_section(results, names, counts):
    """--scaling: dump and restore at each worker count, and the speedup of
    each over the first count's."""
    head = " | ".join(f"dump s ({n})" for n in counts) + " | " + \
        " | ".join(f"restore s ({n})" for n in counts)
    out = [f"### snap with {', '.join(str(n) for n in counts)} worker(s) (`--jobs`; median of "
           "the runs, speedup over the first count)", "",
           "| workload | " + head + " |", "|" + "---|" * (2 * len(counts) + 1)]
    for wl, per_tool in results:
        cells = []
        for key in ("dump", "restore"):
            base = median_of(per_tool.get(names[0], []), key)
            for name in names:
                runs = per_tool.get(name, [])
                m = median_of(runs, key)
                if m is None:
                    cells.append(failed_cell(runs, key) or "–")
                elif name == names[0] or not base:
                    cells.append(fmt_value(key, m))
                else:
                    cells.append(f"{fmt_value(key, m)} ({base / m:.2f}×)")
        out.append(f"| {wl.label} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n\n" + SCALING_NOTES
