#!/usr/bin/env python3
"""snap dump, end to end: running programs are checkpointed and must carry on
unharmed; bad input gets a clear message, a non-zero exit and changes nothing.
Usage: dump_test.py SNAP PROGRAMS_BUILD PROGRAMS_SRC CASE"""
import ctypes
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import snaptest
from snaptest import (HugetlbPool, Skip, case, expect, lines_of, live_pid, main, pid_alive, start, start_job,
                      wait_for, wait_lines)


def image_size(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


@case
def two_threads_256mib(env):
    out = env.path("mem.out")
    ticks = 30
    p = start([env.prog("memthreads"), "256", str(ticks), "100"], stdout_path=out)
    wait_lines(out, 4, timeout=120)
    ckpt = env.path("mem.ckpt")
    r = env.snap_run("dump", "--pid", str(p.pid), "-o", ckpt)
    print(r.stderr.strip())
    kids = [k for t in os.listdir(f"/proc/{p.pid}/task")
            for k in open(f"/proc/{p.pid}/task/{t}/children").read().split()]
    expect(kids == [], f"the dump left no process behind under the job (snapshot reaped): {kids}")
    size = image_size(ckpt)
    expect(size < 48 << 20, f"image of 256 MiB (10% random) is {size / 2**20:.1f} MiB < 48 MiB")
    expect(oct(os.stat(ckpt).st_mode & 0o777) == "0o700", "image directory is 0700")
    proc = env.manifest(ckpt)["checkpoint"]["processes"][0]
    expect(proc["pid"] == p.pid, "the manifest names the pid")
    tids = sorted(int(t) for t in os.listdir(f"/proc/{p.pid}/task"))
    expect(sorted(t["tid"] for t in proc["threads"]) == tids, f"both threads recorded: {tids}")
    info = json.loads(env.snap_run("info", "--json", ckpt).stdout)
    iproc = info["processes"][0]
    expect(iproc["pid"] == p.pid and sorted(t["tid"] for t in iproc["threads"]) == tids,
           "snap info --json names the pid and both threads")
    p.wait(timeout=120)
    lines = lines_of(out)
    expect(p.returncode == 0 and lines[-1] == "done", "the program finished normally")
    ticks_seen = [l for l in lines if l.startswith("tick ")]
    expect([int(l.split()[1]) for l in ticks_seen] == list(range(1, ticks + 1)), "every tick once, in order")
    expect(len({l.split()[2] for l in ticks_seen}) == 1, "memory checksum unchanged across the dump")


def snapshot_private(job):
    """The private memory (bytes) of the job's copy-on-write snapshot, the
    child with exit signal 0 that a leave-running dump makes; None if none."""
    for k in children_of(job):
        try:
            stat = open(f"/proc/{k}/stat").read().rsplit(")", 1)[1].split()
            if int(stat[35]) != 0:  # exit_signal (field 38)
                continue
            kb = 0
            for line in open(f"/proc/{k}/smaps_rollup"):
                if line.startswith(("Private_Dirty:", "Private_Clean:")):
                    kb += int(line.split()[1])
            return kb << 10
        except (OSError, ValueError, IndexError):
            continue
    return None


def anon_pages():
    for line in open("/proc/meminfo"):
        if line.startswith("AnonPages:"):
            return int(line.split()[1]) << 10
    return 0


def dump_sampled(env, job, ckpt, extra):
    """snap dump --pid job -o ckpt EXTRA while a thread samples, every 10 ms,
    the snapshot's private memory and the machine's AnonPages; returns
    (stderr, peak private bytes, peak AnonPages rise)."""
    import threading
    base = anon_pages()
    peak = {"snap": 0, "anon": 0, "samples": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            v = snapshot_private(job)
            if v is not None:
                peak["snap"] = max(peak["snap"], v)
                peak["samples"] += 1
            peak["anon"] = max(peak["anon"], anon_pages() - base)
            time.sleep(0.01)

    t = threading.Thread(target=sample)
    t.start()
    try:
        r = env.snap_run("dump", "--pid", str(job), "-o", ckpt, "--force", *extra)
    finally:
        done.set()
        t.join()
    print(r.stderr.strip())
    print(f"     {peak['samples']} samples: snapshot private peak {peak['snap'] / 2**20:.1f} MiB, "
          f"AnonPages rise peak {peak['anon'] / 2**20:.1f} MiB")
    return r.stderr, peak["snap"], peak["anon"]


def restored_running(pid, exe):
    """The restored job runs its own code again (not traced by restore)."""
    try:
        if os.readlink(f"/proc/{pid}/exe") != exe:
            return False
        st = open(f"/proc/{pid}/status").read()
        return "TracerPid:\t0" in st and "State:\tt" not in st
    except OSError:
        return False


@case
def memory_budget(env):
    """Issue 13: a leave-running dump of a job rewriting all of its 512 MiB
    keeps the snapshot's extra memory under --memory-budget: read pages are
    released from the snapshot, and once the budget would be passed the job
    is stopped again until the rest is read. Since the dump reads on several
    threads and releases what it read every 8 MiB, such a dump holds only a
    few MiB of copies at a time, so the budget here is 2 MiB: small enough
    that it binds. Without a budget the same dump holds more. The image
    restores, and the restored job's memory checks out page by page."""
    import signal
    mib, budget = 512, 2 << 20
    # Slack over the budget: snap checks the snapshot between batches
    # (8 MiB each) and stops the job at the rate it saw; between that check
    # and the stop the job keeps writing (at a few GiB/s on one core, for
    # the milliseconds that stopping takes) and one batch's range is still
    # held. The test samples every 10 ms: what it sees is what there was.
    slack = 64 << 20
    exe = env.prog("rewrite_all")
    # Output in append mode: the restored job's lines come after all others.
    out = env.path("rw.out")
    p = subprocess.Popen([exe, str(mib)], stdout=open(out, "a"), stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    snaptest._started.append(p)  # killed at the end if still running
    wait_lines(out, 1, timeout=60)
    time.sleep(0.3)  # rewriting at full speed
    ckpt = env.path("rw.ckpt")
    err, snap_peak, anon_rise = dump_sampled(env, p.pid, ckpt, ["--memory-budget", "2M"])
    expect(snap_peak <= budget + slack,
           f"with a 2 MiB budget the snapshot's private memory peaked at "
           f"{snap_peak / 2**20:.1f} MiB <= {(budget + slack) >> 20} MiB")
    expect("memory budget of 2 MiB reached" in err, "snap says the budget was reached and "
           "for how long the job was stopped again")
    expect(p.poll() is None, "the job still runs after the dump")
    # The same without a (binding) budget: the test means something. How
    # much the job copies meanwhile depends on how much CPU it gets beside
    # snap's readers (2 cores here: 1.4 to 52 MiB seen), so up to three
    # dumps, until one holds more than the budget.
    free_peak = 0
    for attempt in range(3):
        _, peak, _ = dump_sampled(env, p.pid, env.path(f"rw-free{attempt}.ckpt"),
                                  ["--memory-budget", "64G"])
        print(f"     without a budget: snapshot private peak {peak / 2**20:.1f} MiB")
        free_peak = max(free_peak, peak)
        if free_peak > budget:
            break
    expect(free_peak > budget, f"without a budget the snapshot held more than 2 MiB "
           f"({free_peak / 2**20:.1f} MiB at most): the budget above was what kept it down")
    n = len(lines_of(out))
    os.kill(p.pid, signal.SIGUSR2)
    wait_for(lambda: len(lines_of(out)) > n, 20, "the job's own check")
    expect(lines_of(out)[-1].startswith("verify ok"), f"the job's memory checks out after the dumps: "
           f"{lines_of(out)[-1]}")
    expect(not children_of(p.pid), "no snapshot left under the job")
    os.kill(p.pid, signal.SIGTERM)
    p.wait(timeout=20)
    n = len(lines_of(out))
    r = subprocess.Popen([env.snap, "restore", ckpt], stderr=subprocess.PIPE, text=True)
    try:
        pid = live_pid(p.pid)
        wait_for(lambda: restored_running(pid, exe), 60, "the restored job to run")
        time.sleep(0.2)
        os.kill(pid, signal.SIGUSR2)
        wait_for(lambda: len(lines_of(out)) > n, 30, "the restored job's check")
        line = lines_of(out)[-1]
        os.kill(pid, signal.SIGTERM)
        r.wait(timeout=30)
    finally:
        if r.poll() is None:
            r.kill()
    expect(line.startswith("verify ok"), f"the restored job's memory checks out page by page: {line}")
    expect(r.returncode == 0, f"the restored job exited 0 ({r.returncode}; {r.stderr.read().strip()})")


def memory_cgroup_v1():
    """A writable cgroup v1 memory directory of ours, or None."""
    try:
        for line in open("/proc/self/cgroup"):
            _, ctl, path = line.rstrip("\n").split(":", 2)
            if "memory" in ctl.split(","):
                d = "/sys/fs/cgroup/memory" + (path if path != "/" else "")
                return d if os.access(d, os.W_OK) else None
    except OSError:
        pass
    return None


@case
def memory_budget_cgroup(env):
    """Issue 13: a job that uses most of its memory cgroup's limit, rewriting
    all of it, is dumped leave-running with the default budget (bounded by
    the cgroup's headroom): the job is not OOM-killed by its own checkpoint,
    and its memory checks out. (Without a budget the same dump gets it
    OOM-killed: measured by hand, not run here.) snap is held for 0.3 s
    right after it lets the job go, before it reads anything (its phase
    hook): the budget must hold from that moment, not only once the readers
    are under way (the job copies its 256 MiB in well under that; a CI run
    saw the job OOM-killed when the budget was checked between batches
    only and the first batch came late)."""
    import signal
    parent = memory_cgroup_v1()
    if os.geteuid() != 0 or parent is None:
        raise Skip("needs root and a writable cgroup v1 memory hierarchy")
    cg = os.path.join(parent, f"snap-budget-{os.getpid()}")
    os.mkdir(cg)
    p = None
    try:
        with open(os.path.join(cg, "memory.limit_in_bytes"), "w") as f:
            f.write(str(300 << 20))
        out = env.path("cg.out")
        procs = os.path.join(cg, "cgroup.procs")

        def enter():
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        p = subprocess.Popen([env.prog("rewrite_all"), "256"], stdout=open(out, "a"),
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=enter)
        snaptest._started.append(p)
        wait_lines(out, 1, timeout=60)
        time.sleep(0.3)
        r = env.snap_run("dump", "-v", "--pid", str(p.pid), "-o", env.path("cg.ckpt"),
                         env=dict(os.environ, SNAP_PHASE_LOG=env.path("phases"),
                                  SNAP_PHASE_PAUSE="job-released"))
        expect("job-released" in open(env.path("phases")).read(),
               "snap paused right after it let the job go")
        expect("MiB reached" in r.stderr, "the budget was reached (while snap paused, nothing "
               "read yet) and the job stopped again")
        print("\n".join(l for l in r.stderr.splitlines() if "budget" in l or "snap dump" in l))
        oom = [l for l in open(os.path.join(cg, "memory.oom_control")) if l.startswith("oom_kill ")]
        expect(p.poll() is None, "the job is alive after the dump")
        expect(oom == ["oom_kill 0\n"], f"nothing in the job's cgroup was OOM-killed: {oom}")
        n = len(lines_of(out))
        os.kill(p.pid, signal.SIGUSR2)
        wait_for(lambda: len(lines_of(out)) > n, 20, "the job's own check")
        expect(lines_of(out)[-1].startswith("verify ok"), f"its memory checks out: {lines_of(out)[-1]}")
    finally:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
        os.rmdir(cg)


def ns_ids(path):
    """NSpid, NSpgid, NSsid of a /proc/.../status file, outermost first."""
    ids = {}
    with open(path) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("NSpid", "NSpgid", "NSsid"):
                ids[key] = [int(v) for v in rest.split()]
    return ids


def children_of(pid):
    return [int(k) for t in os.listdir(f"/proc/{pid}/task")
            for k in open(f"/proc/{pid}/task/{t}/children").read().split()]


def expected_view(root):
    """The tree under host pid `root` as its processes see themselves:
    {own pid: (own ppid, pgid, sid, sorted own tids)}, read from /proc."""
    out, host_to_own, todo = {}, {}, [root]
    while todo:
        pid = todo.pop(0)
        ids = ns_ids(f"/proc/{pid}/status")
        host_to_own[pid] = ids["NSpid"][-1]
        tids = sorted(ns_ids(f"/proc/{pid}/task/{t}/status")["NSpid"][-1]
                      for t in os.listdir(f"/proc/{pid}/task"))
        ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        out[pid] = [ppid, ids["NSpgid"][-1], ids["NSsid"][-1], tids]
        todo += children_of(pid)
    # The root's parent (outside the tree): its pid in the same namespace.
    parent = ns_ids(f"/proc/{out[root][0]}/status")["NSpid"]
    host_to_own[out[root][0]] = parent[-1] if len(parent) == len(ns_ids(f"/proc/{root}/status")["NSpid"]) else 0
    return {host_to_own[h]: (host_to_own[v[0]], *v[1:]) for h, v in out.items()}


@case
def pid_namespace_ids(env):
    """Issue #11: a job running in a pid namespace of its own, dumped by its
    host pid, is recorded with the ids it sees there; a job in snap's own
    namespace keeps host ids; a tree across namespaces is refused."""
    unshare = shutil.which("unshare")
    if not unshare or os.geteuid() != 0:
        raise Skip("needs root and unshare(1) to make a pid namespace")
    mem, shm = env.path("ns_mem.out"), env.path("ns_shm.out")
    # sh is pid 1 of the new namespace and the parent of both jobs (pids 2+);
    # memthreads stays in a group and session of outside (0 inside),
    # sharedmem leads its own session in there.
    ns = start([unshare, "--pid", "--fork", "--kill-child", "sh", "-c",
                f"{env.prog('memthreads')} 16 600 100 > {mem} & "
                f"setsid {env.prog('sharedmem')} 4 600 100 > {shm} & wait"])
    wait_lines(mem, 2)
    wait_lines(shm, 2)
    [sh] = children_of(ns.pid)
    jobs = {open(f"/proc/{j}/comm").read().strip(): j for j in children_of(sh)}
    expect(ns_ids(f"/proc/{sh}/status")["NSpid"][-1] == 1, "sh is pid 1 of the new namespace")
    for comm in ("memthreads", "sharedmem"):
        host = jobs[comm]
        nspid = ns_ids(f"/proc/{host}/status")["NSpid"]
        expect(len(nspid) == 2 and nspid[-1] >= 2, f"{comm}: host pid {host}, pid {nspid[-1]} inside")
        ckpt = env.path(f"ns_{comm}.ckpt")
        want = expected_view(host)
        r = env.snap_run("dump", "--pid", str(host), "-o", ckpt)
        print(r.stderr.strip())
        expect(expected_view(host) == want, f"{comm}: the dump left no process behind in the job")
        expect(pid_alive(host), f"{comm} runs on after the dump")
        doc = json.loads(env.snap_run("info", "--json", ckpt).stdout)
        expect(doc.get("pid_namespace") == "own", f"{comm}: pid_namespace is own: {doc.get('pid_namespace')}")
        got = {p["pid"]: (p["ppid"], p["pgid"], p["sid"], sorted(t["tid"] for t in p["threads"]))
               for p in doc["processes"]}
        print(f"{comm}: manifest {got}, /proc says {want}")
        expect(got == want, f"{comm}: pids, ppids, pgids, sids and tids as the job sees them")
        if comm == "sharedmem":
            expect(all(v[1] == v[2] == nspid[-1] for v in got.values()),
                   "sharedmem's group and session are its own pid inside")
        expect(doc["processes"][0]["pid"] == nspid[-1] and doc["processes"][0]["ppid"] == 1,
               f"{comm}: the root is pid {nspid[-1]} with parent 1 (sh) in the image")
        for p in doc["processes"]:
            dumped = sum(m["pages_dumped"] for m in p["mappings"])
            expect(dumped > 0, f"{comm}: pid {p['pid']} has its pages stored under its own pid ({dumped})")
        text = env.snap_run("info", ckpt).stdout
        expect("in its own pid namespace" in text, "snap info says the ids are the job's own")
    # The unshare process is in snap's namespace, its child sh in the new one.
    r = env.snap_run("dump", "--pid", str(ns.pid), "-o", env.path("ns_across.ckpt"), check=False)
    expect(r.returncode != 0 and f"pid {sh}" in r.stderr and "pid namespace" in r.stderr,
           f"a tree across pid namespaces is refused naming pid {sh}: {r.stderr.strip()}")
    expect(not os.path.exists(env.path("ns_across.ckpt")), "nothing written for the refused tree")
    expect(pid_alive(sh) and pid_alive(jobs["memthreads"]), "the refused tree runs on")
    # sh is the namespace's init (a container's, as bwrap or apptainer --pid
    # start one): a restore's namespace has snap's init as pid 1, so the
    # dump refuses at once, naming a child to dump instead.
    r = env.snap_run("dump", "--pid", str(sh), "-o", env.path("ns_init.ckpt"), check=False)
    children = open(f"/proc/{sh}/task/{sh}/children").read().split()
    expect(r.returncode == 1 and "init of its own pid namespace" in r.stderr
           and f"snap dump --pid {children[0]}" in r.stderr,
           f"the namespace's init is refused, naming a child to dump: {r.stderr.strip()}")
    expect(not os.path.exists(env.path("ns_init.ckpt")), "nothing written for the refused init")
    expect(pid_alive(sh) and pid_alive(jobs["memthreads"]), "the refused init and its jobs run on")
    # An image whose pid 1 was such an init (an older snap wrote it) is
    # refused by the restore before anything of the job runs.
    ckpt = env.path("ns_memthreads.ckpt")
    c = env.checkpoint_json(ckpt)
    init = dict(c["processes"][0], pid=1, ppid=0, zombie=True, exit_status=0, mappings=[],
                fds=[], threads=c["processes"][0]["threads"][:1])
    init["threads"] = [dict(init["threads"][0], tid=1)]
    c["processes"].append(init)  # no pages: a zombie's
    env.put_checkpoint_json(ckpt, c)
    r = env.snap_run("restore", "--isolate", ckpt, check=False)
    expect(r.returncode == 1 and "pid 1 was the init of the job's pid namespace" in r.stderr,
           f"the restore refuses an image with pid 1: {r.stderr.strip()}")
    # A job in snap's own namespace: host ids, as before.
    host_out = env.path("host_mem.out")
    p = start([env.prog("memthreads"), "16", "600", "100"], stdout_path=host_out)
    wait_lines(host_out, 2)
    ckpt = env.path("host_mem.ckpt")
    env.snap_run("dump", "--pid", str(p.pid), "-o", ckpt)
    doc = json.loads(env.snap_run("info", "--json", ckpt).stdout)
    tids = sorted(int(t) for t in os.listdir(f"/proc/{p.pid}/task"))
    expect(doc.get("pid_namespace") == "host", "a job in snap's namespace: pid_namespace is host")
    root = doc["processes"][0]
    expect(root["pid"] == p.pid and root["ppid"] == os.getpid()
           and sorted(t["tid"] for t in root["threads"]) == tids, "it keeps its host pid, ppid and tids")


@case
def tree_with_shared_memory(env):
    p, out = start_job(env, "shm", [env.prog("sharedmem"), "32", "60", "50"], 3)
    ckpt = env.path("shm.ckpt")
    env.snap_run("dump", "--pid", str(p.pid), "-o", ckpt)
    doc = json.loads(env.snap_run("info", "--json", ckpt).stdout)
    expect(len(doc["processes"]) == 2, "parent and child are both in the image")
    dumped = []
    for proc in doc["processes"]:
        shared = [m for m in proc["mappings"] if m["kind"] == "shared_anon"]
        expect(len(shared) == 1, f"pid {proc['pid']} maps the shared region")
        dumped.append(shared[0]["pages_dumped"])
    expect(sum(dumped) == 32 * 256 and 32 * 256 in dumped,
           f"all 8192 pages of the shared region are in the image, read once: {dumped}")
    stats = doc["stats"]
    print(json.dumps(stats))
    expect(stats["unique_pages"] >= 8192, "the 8192 distinct shared pages are stored")
    p.wait(timeout=60)
    lines = lines_of(out)
    expect(len(lines) == 60 and all(l.endswith(" ok") for l in lines), "the child kept seeing intact memory")


@case
def tree_zombie_sockets_shared(env):
    """A tree for restore (issue 9): a zombie, a child subreaper, socket
    pairs with data queued both ways, an inherited open file, shared memory."""
    go = env.path("go")
    p, out = start_job(env, "tree", [env.prog("tree_dump"), env.path("file"), go], 1)
    _, parent, child, zombie = lines_of(out)[0].split()
    parent, child, zombie = int(parent), int(child), int(zombie)
    ckpt = env.path("tree.ckpt")
    env.snap_run("dump", "--pid", str(parent), "-o", ckpt)
    man = env.manifest(ckpt)["checkpoint"]
    procs = {pr["pid"]: pr for pr in man["processes"]}
    expect(man["processes"][0]["pid"] == parent and set(procs) == {parent, child, zombie},
           f"root first, then the child and the zombie: {list(procs)}")
    order = [pr["pid"] for pr in man["processes"]]
    expect(all(order.index(pr["ppid"]) < order.index(pr["pid"]) for pr in man["processes"][1:]),
           "each process's parent comes before it")
    z = procs[zombie]
    expect(z.get("zombie") is True and z["exit_status"] == 7 << 8 and z["ppid"] == parent,
           f"the zombie with wait status 7 << 8: {z.get('exit_status')}")
    expect(z["threads"] == [] and z["mappings"] == [] and z["fds"] == [], "the zombie has no state")
    expect(procs[parent].get("child_subreaper") == 1, "the parent is a child subreaper")
    expect(procs[child].get("child_subreaper") == 0, "the child is not")

    def fd_by_path(pid, suffix):
        return [f for f in procs[pid]["fds"] if f["path"].endswith(suffix)]
    pf, cf = fd_by_path(parent, "/file"), fd_by_path(child, "/file")
    expect(len(pf) == 1 and len(cf) == 1 and pf[0]["file_id"] and pf[0]["file_id"] == cf[0]["file_id"],
           "the inherited open file has one file_id in both processes")
    ids = [f["file_id"] for pr in man["processes"] for f in pr["fds"]]
    expect(all(ids), "every fd has a file_id")

    def sockets(pid):
        return {f["unix_socket"]["type"]: f for f in procs[pid]["fds"] if f.get("unix_socket")}
    ps, cs = sockets(parent), sockets(child)
    expect(set(ps) == {1, 2, 5} and set(cs) == {1, 2, 5}, "stream, dgram and seqpacket in both")
    h = lambda s: s.encode().hex()
    want = {  # type: (queued at the parent's end, at the child's end)
        1: (["stream from child"], ["stream from parent"]),
        5: (["reply 1", "reply 22", "reply 333"], ["seq one", "seq two, longer"]),
        2: (["back 1", "back 2"], ["d1", "dgram two"]),
    }
    for t, (at_parent, at_child) in want.items():
        a, b = ps[t], cs[t]
        expect(a["unix_socket"]["peer_inode"] == b["inode"] and b["unix_socket"]["peer_inode"] == a["inode"],
               f"type {t}: the peers point at each other")
        expect(a["unix_socket"]["state"] == 1 and a["file_id"] != b["file_id"], f"type {t}: connected, two sockets")
        expect(a["unix_socket"]["queue"] == [h(m) for m in at_parent], f"type {t}: the parent's queue exactly")
        expect(b["unix_socket"]["queue"] == [h(m) for m in at_child], f"type {t}: the child's queue exactly")

    shared = [(pid, m) for pid in (parent, child) for m in procs[pid]["mappings"]
              if m["kind"] == "shared_anon" and m["end"] - m["start"] == 16 * 4096]
    expect(len(shared) == 2 and shared[0][1]["inode"] == shared[1][1]["inode"],
           "both map the one shared region")
    expect(sorted(m["pages_dumped"] for _, m in shared) == [0, 16], "its 16 pages are dumped once")

    doc = json.loads(env.snap_run("info", "--json", ckpt).stdout)
    iz = [pr for pr in doc["processes"] if pr["pid"] == zombie][0]
    expect(iz["zombie"] and iz["exit_text"] == "exit status 7", "snap info: the zombie's exit status")
    sh = doc["sharing"]
    expect(any({"pid": parent, "fd": pf[0]["fd"]} in f["fds"] and {"pid": child, "fd": cf[0]["fd"]} in f["fds"]
               for f in sh["open_files"]), "snap info: the shared open file")
    pairs = {sp["type"]: sp for sp in sh["unix_socket_pairs"]}
    expect(set(pairs) == {"stream", "dgram", "seqpacket"}, "snap info: three socket pairs")
    expect(sorted(e["queued_messages"] for e in pairs["seqpacket"]["ends"]) == [2, 3],
           "snap info: queued messages per end")
    expect(len(sh["shared_memory"]) == 1 and sorted(sh["shared_memory"][0]["pids"]) == sorted([parent, child])
           and sh["shared_memory"][0]["pages_dumped"] == 16, "snap info: the shared memory object")
    text = env.snap_run("info", ckpt).stdout
    expect("zombie (exit status 7)" in text and "child subreaper" in text and "unix seqpacket" in text,
           "the text output shows the tree and the sharing")

    # The job goes on: every queue still holds its data, the file offset is shared.
    open(go, "w").close()
    p.wait(timeout=60)
    lines = lines_of(out)
    expect(p.returncode == 0 and lines[-1] == "DONE ok" and "parent ok" in lines and "child ok" in lines,
           f"the job read its queues intact and reaped the zombie (exit 7): {lines}")


@case
def python_leave_running(env):
    p, out = start_job(env, "py", [sys.executable, env.src("counter.py"), "10", "100"], 3)
    env.snap_run("dump", "--pid", str(p.pid), "-o", env.path("py.ckpt"))
    p.wait(timeout=60)
    expect(p.returncode == 0, "python counter exits 0 after being dumped")
    expect(lines_of(out) == [str(i) for i in range(1, 11)], "its output is that of an undisturbed run")


@case
def info_shows_parasite_state(env):
    p, out = start_job(env, "victim", [env.prog("victim"), "200", "20"], 3)
    ckpt = env.path("victim.ckpt")
    env.snap_run("dump", "--pid", str(p.pid), "-o", ckpt)
    doc = json.loads(env.snap_run("info", "--json", ckpt).stdout)
    proc = doc["processes"][0]
    handlers = {a["name"]: a for a in proc["sigactions"]}
    expect("on_alarm" in (handlers["SIGALRM"]["handler_symbol"] or ""), "SIGALRM handler named by its symbol")
    expect("SA_ONSTACK" in handlers["SIGALRM"]["flags_text"], "its SA_ONSTACK flag shown")
    expect(proc["threads"][0]["sigaltstack"]["size"] == 65536, "the 64 KiB alternate stack")
    workers = proc["threads"][1:]
    expect(len(workers) == 3 and all(t["sigaltstack"]["size"] == 16384 for t in workers)
           and len({t["sigaltstack"]["sp"] for t in workers}) == 3,
           f"each worker thread's own 16 KiB alternate stack: {[t.get('sigaltstack') for t in workers]}")
    expect(proc["itimers"]["real"]["interval_ns"] == 10_000_000, "ITIMER_REAL every 10 ms")
    timers = proc["posix_timers"]
    expect(len(timers) == 1 and timers[0]["signal"] == "SIGUSR1"
           and timers[0]["value"]["interval_ns"] == 20_000_000, "the POSIX timer (SIGUSR1, 20 ms)")
    pipes = [f for f in proc["fds"] if f["type"] == "pipe" and f.get("pipe_data_bytes")]
    expect(pipes, "unread pipe data recorded")
    text = env.snap_run("info", ckpt).stdout
    expect("POSIX timer 0" in text and "victim!on_alarm" in text, "the text output shows them too")
    p.wait(timeout=60)
    lines = [l for l in lines_of(out) if not l.startswith("ready ")]
    expect(lines[-1] == "DONE ok" and not any("FAIL" in l for l in lines), "the victim's own checks pass")


def expect_refused(env, args, exit_code, words, what):
    r = env.snap_run("dump", *args, check=False)
    expect(r.returncode == exit_code, f"{what}: exit {exit_code} (got {r.returncode})")
    for w in words:
        expect(w in r.stderr, f"{what}: message says '{w}': {r.stderr.strip()}")
    return r


@case
def bad_inputs(env):
    victim, out = start_job(env, "victim", [env.prog("counter"), "100000", "50"], 1)
    dest = env.path("nothing")

    expect_refused(env, ["--pid", "4000000", "-o", dest], 1, ["no process with pid 4000000"], "no such pid")
    expect_refused(env, ["--pid", "2", "-o", dest], 1, ["kernel thread"], "kernel thread")
    expect_refused(env, ["--pid", str(os.getpid()), "-o", dest], 1, ["ancestor"], "snap's own ancestor")
    expect_refused(env, ["-o", dest], 2, ["--pid"], "missing --pid")
    expect_refused(env, ["--pid", str(victim.pid)], 2, ["-o"], "missing -o")
    expect_refused(env, ["--pid", str(victim.pid), "-o", dest, "--jobs", "0"], 2, ["--jobs"], "--jobs 0")
    expect_refused(env, ["--pid", str(victim.pid), "-o", dest, "--compress", "sometimes"], 2,
                   ["--compress", "auto or always"], "unknown --compress")

    zombie = subprocess.Popen(["true"])
    time.sleep(0.3)  # exited, not yet waited for: a zombie
    expect_refused(env, ["--pid", str(zombie.pid), "-o", dest], 1, ["zombie"], "zombie")
    zombie.wait()

    # Already traced: attach to the victim ourselves first.
    libc = ctypes.CDLL(None, use_errno=True)
    PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH = 0x4206, 0x4207, 17
    expect(libc.ptrace(PTRACE_SEIZE, victim.pid, 0, 0) == 0, "the test holds the victim with ptrace")
    expect_refused(env, ["--pid", str(victim.pid), "-o", dest], 1, ["already traced"], "traced by another")
    libc.ptrace(PTRACE_INTERRUPT, victim.pid, 0, 0)  # detaching needs a stopped tracee
    os.waitpid(victim.pid, 0x40000000)  # __WALL
    expect(libc.ptrace(PTRACE_DETACH, victim.pid, 0, 0) == 0, "the test let go of the victim")

    # Not allowed to trace: an unprivileged user against a root process.
    if os.geteuid() == 0 and shutil.which("setpriv"):
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", env.snap,
                            "dump", "--pid", str(victim.pid), "-o", "/tmp/snap-e2e-nobody"],
                           capture_output=True, text=True, timeout=60)
        expect(r.returncode == 1 and "cannot attach" in r.stderr and "hint:" in r.stderr,
               f"EPERM is explained: {r.stderr.strip()}")
    else:
        print("SKIP part: EPERM case needs root and setpriv")

    # An existing non-empty directory is refused without --force.
    full = env.path("occupied")
    os.mkdir(full)
    with open(os.path.join(full, "precious"), "w") as f:
        f.write("keep me")
    expect_refused(env, ["--pid", str(victim.pid), "-o", full], 1, [full], "non-empty output dir")
    expect(os.listdir(full) == ["precious"], "its contents are untouched")
    expect(not os.path.exists(dest), "no output was created by any refused dump")

    n = len(lines_of(out))
    wait_lines(out, n + 3)
    expect(victim.poll() is None, "the victim kept running through all of it")


def job_refused(env, name, argv, words, what):
    """argv started (in a session of its own) until it printed 2 lines, then
    a --kill dump of it refused with `words` in the message: nothing
    written, the job runs on (then it is killed). Returns how long the dump
    took."""
    job, out = start_job(env, name, argv, 2, start_new_session=True)
    dest = env.path(name + ".ckpt")
    t0 = time.monotonic()
    r = expect_refused(env, ["--kill", "--pid", str(job.pid), "-o", dest], 1,
                       [w.format(pid=job.pid) for w in words], what)
    took = time.monotonic() - t0
    expect(not os.path.exists(dest), "nothing written for the refused dump")
    n = len(lines_of(out))
    wait_lines(out, n + 2)
    expect(job.poll() is None, f"the job runs on after the refusal ({r.stderr.strip()[-200:]})")
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    return took


def vfork_refused(env, name, mode, words, what):
    """vfork_spawn MODE (its child's vfork child never runs a program) is
    refused at dump after a few seconds, not waited for."""
    took = job_refused(env, name, [env.prog("vfork_spawn"), mode, "100000", "50"], words, what)
    expect(took < 20, f"the refusal came after {took:.1f} s, not a hang")


@case
def vfork_child_refused(env):
    """A process in vfork() whose child never runs a program sleeps
    uninterruptibly: no ptrace stop reaches it. The dump waits a few
    seconds for the child's exec, then refuses, naming both, instead of
    hanging with the rest of the job stopped; the job runs on."""
    vfork_refused(env, "vfork_stuck", "stuck", ["is in vfork()", "to run a program"],
                  "a process in vfork")


@case
def vfork_in_thread_refused(env):
    """The same with the vfork() made by a second thread of the job's child
    while its leader runs on: the dump looks at every thread, waits a few
    seconds, then refuses, naming the thread, instead of waiting for that
    thread's stop for ever (the snap before hung there, the job's other
    threads and processes stopped); the job runs on."""
    vfork_refused(env, "vfork_thread", "thread-stuck",
                  ["(thread ", "is in vfork()", "to run a program"], "a thread in vfork")


@case
def seccomp_thread_refused(env):
    """An ordinary user's dump of a job whose second thread is under seccomp
    of its own (filters its leader lacks, or strict mode): only
    CAP_SYS_ADMIN can read the filters (restore-seccomp_thread_kept is
    root's dump and restore), and the parasite's system calls in a
    strict-mode thread would kill it (an earlier snap dumped the filter job
    as if nothing were lost, and left the strict one hung, its thread
    killed). The dump refuses, naming the thread, before anything is
    injected, whether it reads the threads while the job runs or, with
    --kill, once it is stopped; the job, that thread included, runs on to
    its end with every round trip through the thread answered."""
    if os.geteuid() == 0:
        raise Skip("an ordinary user's case (nobody-dump-seccomp_thread_refused); root's dump "
                   "saves the filters (restore-seccomp_thread_kept)")
    limit = 60
    for mode in ("filter", "strict"):
        for kill in (False, True):
            what = f"{mode}{' --kill' if kill else ''}"
            name = f"seccomp_{mode}{'_kill' if kill else ''}"
            job, out = start_job(env, name, [env.prog("seccomp_thread"), mode, str(limit), "50"], 2,
                                 start_new_session=True)
            dest = env.path(name + ".ckpt")
            args = (["--kill"] if kill else []) + ["--pid", str(job.pid), "-o", dest]
            under = "strict mode" if mode == "strict" else "2 seccomp filter(s)"
            expect_refused(env, args, 1, ["thread ", f"of pid {job.pid}", under, "as root",
                                          "nothing was injected"], what)
            expect(not os.path.exists(dest), f"{what}: nothing written for the refused dump")
            job.wait(timeout=60)
            lines = lines_of(out)
            expect(lines == [f"{i} thread ok" for i in range(limit)] + ["DONE"],
                   f"{what}: the job ran to its end through its seccomp'd thread "
                   f"(exit {job.returncode}, last lines {lines[-2:]})")


RAW_SOCKET_JOB = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, int(sys.argv[1]))
for i in range(100000):
    print(i, flush=True)
    time.sleep(0.05)
"""


@case
def raw_socket_refused(env):
    """A raw IP socket (root's, CAP_NET_RAW) is refused at dump, naming the
    fd and its protocol, and the job runs on: the snap before took a raw
    socket of protocol TCP for a TCP connection and failed on it with
    "getsockopt(TCP_INFO) ... Operation not supported", and a restore has
    never made raw sockets."""
    for proto, name in ((6, "tcp"), (1, "icmp")):
        job_refused(env, f"raw_{name}", [sys.executable, "-c", RAW_SOCKET_JOB, str(proto)],
                    ["pid {pid} fd ", f"a raw IP socket (SOCK_RAW, protocol {proto})",
                     "nothing was killed"], f"a raw socket of protocol {proto}")


# A job holding an fd on a symbolic link (O_PATH | O_NOFOLLOW) or a device
# node it then deleted, then counting.
SPECIAL_FILE_JOB = r"""
import os, stat, sys, time
path = os.path.join(sys.argv[1], "special")
if sys.argv[2] == "link":
    os.symlink("nowhere", path)
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW)
else:
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    fd = os.open(path, os.O_RDWR)
os.unlink(path)
for i in range(100000):
    print(i, flush=True)
    time.sleep(0.05)
"""


@case
def deleted_special_file_refused(env):
    """An fd on a deleted symbolic link or device node: nothing leads to it
    and snap cannot make it again, so the dump refuses, naming the fd, and
    the job runs on (it wrote an image no restore could bring back)."""
    kinds = [("link", "deleted symbolic link")]
    if os.geteuid() == 0:
        kinds.append(("dev", "deleted device node"))
    else:
        print("skip the device node: making one needs CAP_MKNOD")
    for kind, words in kinds:
        d = env.path(f"special_{kind}")
        os.mkdir(d)
        job_refused(env, f"special_{kind}", [sys.executable, "-c", SPECIAL_FILE_JOB, d, kind],
                    [words, "pid {pid} fd 3"], f"an fd on a {words}")


# A job holding /dev/fuse open (as a FUSE server, squashfuse or sshfs, does),
# then counting.
FUSE_JOB = r"""
import os, sys, time
fd = os.open("/dev/fuse", os.O_RDWR)
for i in range(100000):
    print(i, flush=True)
    time.sleep(0.05)
"""


# A job holding a POSIX message queue (mq_open through ctypes), then
# counting; the queue is removed when it ends.
MQUEUE_JOB = r"""
import ctypes, os, sys, time
rt = ctypes.CDLL("librt.so.1", use_errno=True)
name = b"/snap-test-%d" % os.getpid()
q = rt.mq_open(name, os.O_CREAT | os.O_RDWR, 0o600, None)
if q < 0:
    sys.exit("mq_open: " + os.strerror(ctypes.get_errno()))
rt.mq_unlink(name)  # the fd keeps it
for i in range(100000):
    print(i, flush=True)
    time.sleep(0.05)
"""


@case
def message_queue_refused(env):
    """A POSIX message queue looks like a regular file at "/NAME" in
    /proc/PID/fd; the dump refuses it, naming the fd, instead of saving a
    file a restore would look for in the root directory (the snap before
    dumped it and the restore failed, or opened another file)."""
    job_refused(env, "mqueue", [sys.executable, "-c", MQUEUE_JOB],
                ["pid {pid} fd 3 (/snap-test-", "POSIX message queue"], "a message queue")


# A job holding a file in huge pages of the hugetlb pool, mapped shared
# and written, then counting: an MFD_HUGETLB memfd (argv[1] "memfd") or a
# file of the hugetlbfs mount at argv[1].
HUGETLB_FILE_JOB = r"""
import mmap, os, sys, time
if sys.argv[1] == "memfd":
    fd = os.memfd_create("snap-test-huge", os.MFD_HUGETLB)
else:
    fd = os.open(os.path.join(sys.argv[1], "data"), os.O_RDWR | os.O_CREAT, 0o600)
os.ftruncate(fd, 2 << 20)
m = mmap.mmap(fd, 2 << 20, mmap.MAP_SHARED)
m[:4096] = b"x" * 4096
for i in range(100000):
    print(i, flush=True)
    time.sleep(0.05)
"""


@case
def hugetlb_files_refused(env):
    """Files in huge pages of the hugetlb pool are refused at dump, naming
    them and saying what to do: an MFD_HUGETLB memfd the job holds an fd of
    (nothing could make it again with its contents), and, as root, a file
    of a hugetlbfs mount mapped shared (both the job's memory and a file
    others may share). Hugetlb memory only mappings hold is saved
    (restore-hugetlb_memory, restore-hugetlb_shared_memory)."""
    with HugetlbPool(4):
        job_refused(env, "hugetlb_memfd", [sys.executable, "-c", HUGETLB_FILE_JOB, "memfd"],
                    ["pid {pid} fd ", "MFD_HUGETLB memfd", "keeping its mappings"],
                    "a hugetlb memfd held by an fd")
        if os.geteuid() != 0 or os.environ.get("SNAP_TEST_UNPRIVILEGED"):
            print("part skipped: mounting hugetlbfs needs root")
            return
        mnt = env.path("hugetlbfs")
        os.makedirs(mnt, exist_ok=True)
        if subprocess.run(["mount", "-t", "hugetlbfs", "none", mnt]).returncode != 0:
            print("part skipped: hugetlbfs cannot be mounted here")
            return
        try:
            job_refused(env, "hugetlb_file", [sys.executable, "-c", HUGETLB_FILE_JOB, mnt],
                        ["pid {pid} mapping", "/data)", "a file of a hugetlbfs mount mapped shared"],
                        "a hugetlbfs file mapped shared")
        finally:
            subprocess.run(["umount", "-l", mnt])


@case
def device_with_driver_state_refused(env):
    """An fd on a device whose state lives in its driver (here /dev/fuse,
    the connection behind a FUSE mount; GPUs, RDMA adapters and MPI's
    single-copy modules are the same kind, unit-tested by driver name):
    a restore that reopened its path would give the job a fresh one, so the
    dump refuses, naming the fd and the driver, and the job runs on (the
    snap before dumped it and reopened /dev/fuse at restore)."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        raise Skip("opening /dev/fuse needs root and the fuse module")
    job_refused(env, "fuse_fd", [sys.executable, "-c", FUSE_JOB],
                ["pid {pid} fd 3 (/dev/fuse)", "FUSE file system", "driver fuse"],
                "an fd on /dev/fuse")


def kill_restore_count_on(env, p, out, ckpt, count, timeout):
    """Kills manymaps job `p` (writing to `out`) mid-run, restores `ckpt` and
    checks that it counted on to `count` with every check it makes (its
    pages, and with CHURN their protections) passing, before and after."""
    p.kill()
    p.wait()
    before = lines_of(out)
    expect(not [l for l in before if l.startswith("bad")] and len(before) < count,
           f"killed mid-run at line {len(before)}, every check passed before")
    r = env.snap_run("restore", ckpt, timeout=timeout, check=False)
    expect(r.returncode == 0, f"restored job exited 0 (got {r.returncode}; {r.stderr.strip()[-300:]})")
    got = lines_of(out)
    expect(not [l for l in got if l.startswith("bad")], f"every page (and protection) as the job "
           f"left it after restore: {[l for l in got if l.startswith('bad')][:3]}")
    nums = [int(l) for l in got]
    expect(nums[-1] == count and all(b == a + 1 or b <= a for a, b in zip(nums, nums[1:])),
           f"the restored job counted on to {count} (last lines {got[-3:]})")


@case
def many_mappings(env):
    # 20,000 one-page mappings (a JVM, Python with many extension modules):
    # dumped with --jobs 2 and with --jobs 1 while the job runs on, the two
    # images hold the same pages; the job, killed, restores from the first
    # and counts on with every page intact (it checks them all per line).
    n, count = 20000, 60
    out = env.path("maps.out")
    p = start([env.prog("manymaps"), str(n), str(count)], stdout_path=out)
    wait_lines(out, 2, timeout=60)
    ck2, ck1 = env.path("maps2.ckpt"), env.path("maps1.ckpt")
    t0 = time.monotonic()
    r = env.snap_run("dump", "--pid", str(p.pid), "-o", ck2, "--jobs", "2", "-v")
    took = time.monotonic() - t0
    steps = [l for l in r.stderr.splitlines() if "steps:" in l]
    print(f"dump of {n} mappings with --jobs 2: {took:.2f} s; {steps[-1] if steps else ''}")
    env.snap_run("dump", "--pid", str(p.pid), "-o", ck1, "--jobs", "1")
    stats = [json.loads(env.snap_run("info", "--json", d).stdout)["stats"] for d in (ck2, ck1)]
    expect(stats[0]["pages"] == stats[1]["pages"] and stats[0]["unique_pages"] == stats[1]["unique_pages"],
           f"--jobs 1 and 2 store the same pages: {stats[0]['pages']}/{stats[0]['unique_pages']} and "
           f"{stats[1]['pages']}/{stats[1]['unique_pages']}")
    maps = env.manifest(ck2)["checkpoint"]["processes"][0]["mappings"]
    dumped = sum(1 for m in maps if m["pages_dumped"] == 1 and m["end"] - m["start"] == 4096)
    expect(dumped >= n, f"each one-page mapping has its page in the image ({dumped} >= {n})")
    kill_restore_count_on(env, p, out, ck2, count, timeout=240)


@case
def mappings_changing_while_hinted(env):
    # A leave-running dump reads smaps before the stop (hints) and, while the
    # job is stopped, /proc/PID/maps, taking the hints whole only when maps
    # is the same text (src/tracer/vmflags.h). This job flips the protection
    # of one of its pages every 200 us, so maps differs: the mappings must
    # then be the job's at the stop, not the hints'. The restored job checks
    # each line that /proc/self/maps shows every page with the protection
    # it last set, and its pages, and counts on.
    n, count = 2000, 40
    out = env.path("churn.out")
    p = start([env.prog("manymaps"), str(n), str(count), "1"], stdout_path=out)
    wait_lines(out, 2, timeout=60)
    ck, changed = None, None
    for attempt in range(5):
        ck = env.path(f"churn{attempt}.ckpt")
        r = env.snap_run("dump", "--pid", str(p.pid), "-o", ck, "-v")
        changed = re.search(r"mappings changed since the hints: (.*)", r.stderr)
        if changed:
            break
    expect(changed, "one of 5 dumps found the mappings changed since the hints")
    print(f"dump {attempt + 1}: mappings changed since the hints: {changed.group(1)}")
    kill_restore_count_on(env, p, out, ck, count, timeout=120)


def smaps_flags(pid):
    """{start: set of VmFlags} from /proc/PID/smaps."""
    flags, start = {}, None
    for line in open(f"/proc/{pid}/smaps"):
        head = line.split(" ", 1)[0]
        if "-" in head and not head.endswith(":"):
            start = int(head.split("-")[0], 16)
        elif line.startswith("VmFlags:"):
            flags[start] = set(line.split()[1:])
    return flags


@case
def mapping_flags_leave_running(env):
    # A leave-running dump takes mapping flags from smaps read before the
    # job is stopped and checks them against its copy-on-write snapshot
    # (src/tracer/vmflags.h): advice, MADV_DONTFORK / WIPEONFORK and locks
    # (which fork does not pass on) must be in the image as smaps shows
    # them, and the job must carry on. (restore-madvise_flags restores such
    # flags from a --kill dump, which reads smaps while the job is stopped.)
    out = env.path("flags.out")
    p = start([env.prog("madvise_flags"), "1000", "100"], stdout_path=out)
    wait_lines(out, 2)
    ckpt = env.path("flags.ckpt")
    env.snap_run("dump", "--pid", str(p.pid), "-o", ckpt)
    now = smaps_flags(p.pid)
    maps = env.manifest(ckpt)["checkpoint"]["processes"][0]["mappings"]
    differ = [(hex(m["start"]), m["vmflags"], " ".join(sorted(now.get(m["start"], []))))
              for m in maps if m["start"] in now and set(m["vmflags"].split()) != now[m["start"]]]
    expect(not differ, f"every mapping's flags in the image are smaps': {differ[:3]}")
    seen = set().union(*(set(m["vmflags"].split()) for m in maps))
    expect({"dc", "lo", "wf", "nr"} <= seen, f"the program's locked, MADV_DONTFORK, WIPEONFORK "
           f"and MAP_NORESERVE mappings are there ({sorted(seen)})")
    n = len(lines_of(out))
    wait_lines(out, n + 2)  # the job carries on after the dump
    p.kill()
    p.wait()


def mount_tmpfs(env, name, opts):
    d = env.path(name)
    os.mkdir(d)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "snap-e2e", d], capture_output=True, text=True)
    if r.returncode != 0:
        raise Skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    return d


@case
def full_and_readonly_disk(env):
    if os.geteuid() != 0:
        raise Skip("mounting a small tmpfs needs root")
    victim, out = start_job(env, "victim", [env.prog("memthreads"), "64", "100000", "50"], 2, timeout=60)
    try:
        small = mount_tmpfs(env, "small", "size=1m")
        r = env.snap_run("dump", "--pid", str(victim.pid), "-o", os.path.join(small, "ck"), check=False)
        expect(r.returncode == 1, f"a full disk fails the dump with exit 1 (got {r.returncode})")
        expect("No space left" in r.stderr, f"the message says the disk is full: {r.stderr.strip()}")
        expect(os.listdir(small) == [], f"partial files removed: {os.listdir(small)}")

        ro = mount_tmpfs(env, "ro", "size=64m,ro")
        r = env.snap_run("dump", "--pid", str(victim.pid), "-o", os.path.join(ro, "ck"), check=False)
        expect(r.returncode == 1, f"a read-only disk fails the dump with exit 1 (got {r.returncode})")
        expect("Read-only" in r.stderr, f"the message says read-only: {r.stderr.strip()}")
    finally:
        for d in ("small", "ro"):
            subprocess.run(["umount", env.path(d)], capture_output=True)
    n = len(lines_of(out))
    wait_lines(out, n + 3)
    expect(victim.poll() is None, "the job kept running")
    sums = {l.split()[2] for l in lines_of(out) if l.startswith("tick ")}
    expect(len(sums) == 1, "its memory is intact (checksum unchanged)")


if __name__ == "__main__":
    main()
