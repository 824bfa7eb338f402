#!/usr/bin/env python3
"""snap dump and restore of what a job holds open, end to end: descriptors
and their offsets, pipes and FIFOs with their data, epoll, signalfd, timerfd,
inotify, AIO contexts, deleted files and memfds, terminals; and what must be
refused. Each restored program must finish with the output of an
uninterrupted run. Usage: files_test.py SNAP PROGRAMS_BUILD PROGRAMS_SRC CASE"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from snaptest import (Skip, case, expect, expect_dump_refused, lines_of, main, pid_alive, start,
                      wait_for, wait_lines)
from compare_runs import (dump_kill_restore, ran_on_to_its_end, reap_killed_children,
                          runs_on_then_restores, uninterrupted)


@case
def xz_file_to_file(env):
    p, ref, out, ckpt, _ = xz_dumped(env, "xz")
    r = env.snap_run("restore", ckpt, timeout=300, check=False)
    expect(r.returncode == 0, f"restored xz exited 0 ({r.stderr.strip()})")
    with open(out, "rb") as f:
        got = f.read()
    expect(got == ref, "xz output identical to an uninterrupted run (input and output offsets)")


def xz_dumped(env, name, *dump_args):
    """xz compressing a file into a file, dumped with --kill (and dump_args)
    mid-stream: its process, the output of an uninterrupted run, the output
    file, the image, the dump's stderr."""
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
    r = env.snap_run("dump", "--kill", *dump_args, "--pid", str(p.pid), "-o", ckpt)
    p.wait()
    partial = os.path.getsize(out)
    expect(0 < partial < len(ref), f"xz was stopped mid-stream ({partial} of {len(ref)} bytes)")
    return p, ref, out, ckpt, r.stderr


def history_job_started(env, name, steps, lines_first):
    """tests/programs/history_file.py run uninterrupted, then started again
    on directory "work" (100 ms a step), its stdout in NAME.out, once it has
    printed lines_first lines: (the process, work, NAME.out, NAME.ckpt, the
    uninterrupted run's lines)."""
    prog = env.src("history_file.py")
    rc, ref = uninterrupted([sys.executable, prog, str(steps), "0", env.path("ref")])
    expect(rc == 0 and len(ref) == steps, f"an uninterrupted run ({rc}, {ref[-2:]})")
    d, out, ckpt = env.path("work"), env.path(f"{name}.out"), env.path(f"{name}.ckpt")
    p = start([sys.executable, prog, str(steps), "100", d], stdout_path=out)
    wait_lines(out, lines_first)
    return p, d, out, ckpt, ref


@case
def with_files_dump_restore(env):
    # snap dump --with-files DIR: a path that is not there (not made yet)
    # keeps nothing and the dump says so, but does not fail (the checkpoint
    # before a time limit must not); a leave-running dump keeps DIR (named
    # by a symbolic link to it) as it was at the stop, a file that had not
    # changed for a while (QUIET) read after the freeze. The job (tests/programs/history_file.py) runs on to
    # its end, rewriting DIR; then a file of it is removed and one added.
    # The restore puts DIR back as it was at the dump (the removed 2 MiB
    # file made again from the page store), leaves the added one, and the
    # job, resumed from the dump, ends as an uninterrupted run: with the
    # files of its last step, it would print "stale" lines.
    p, d, out, ckpt, ref = history_job_started(env, "with_files", 24, 4)
    missing = os.path.join(d, "missing")
    r = env.snap_run("dump", "--pid", str(p.pid), "-o", env.path("missing.ckpt"), "--with-files",
                     missing, check=False)
    expect(r.returncode == 0 and f"--with-files {missing}: not there at this checkpoint" in r.stderr
           and p.poll() is None, f"a path not made yet keeps nothing, said: {r.stderr.strip()}")
    link = env.path("work-link")  # a named link means where it leads (an outdir on scratch)
    os.symlink(d, link)
    time.sleep(1.2)  # input.bin, written at the start, is quiet by now (QUIET: 1 s)
    r = env.snap_run("dump", "-v", "--pid", str(p.pid), "-o", ckpt, "--with-files", link, env=QUIET)
    expect("--with-files: 2.0 MiB of files unchanged for 1 s before the stop read after it"
           in r.stderr, f"the quiet input.bin was read after the freeze: "
                        f"{[l for l in r.stderr.splitlines() if 'with-files' in l]}")
    info = env.snap_run("info", ckpt).stdout
    listed = [next(w for w in l.split() if w.startswith("/")) for l in info.splitlines()
              if l.endswith("(--with-files)")]
    expect(f"{d}/state" in listed and f"{d}/frames/big.bin" in listed,
           f"snap info lists the files: {listed}")
    p.wait()
    expect(p.returncode == 0 and lines_of(out) == ref, "the job ran on to its end after the dump")
    os.unlink(os.path.join(d, "frames", "big.bin"))
    os.unlink(os.path.join(d, "input.bin"))
    with open(os.path.join(d, "added.txt"), "w") as f:
        f.write("added after the dump\n")
    r = env.snap_run("restore", "-v", ckpt, check=False, timeout=120)
    expect(r.returncode == 0 and lines_of(out) == ref and "put back 1 file(s)" in r.stderr,
           f"the state file put back, big.bin and input.bin made again: the job ended as an "
           f"uninterrupted run "
           f"(exit {r.returncode}, {r.stderr.strip()[-400:]}; {lines_of(out)[-3:]})")
    expect(os.path.exists(os.path.join(d, "added.txt")), "a file added since the dump is left")


@case
def changed_input_refused(env):
    # The file xz reads is cut short, then removed, between dump and restore:
    # each restore refuses, naming the fd and what changed, and starts
    # nothing; with the file back as it was, xz finishes as if never stopped.
    # The file lies in the test's directory in /tmp, so the image would keep
    # it (and a restore make it again): dumped with --temp-files-max 0, as a
    # file elsewhere, which the dump names.
    p, ref, out, ckpt, said = xz_dumped(env, "changed", "--temp-files-max", "0")
    src = env.path("changed-data.txt")
    expect(re.search(re.escape(f"({src}): ") + r"[\d.]+ MiB in a temporary directory, not kept in "
                     r"the image \(more than the 0\.0 GiB of such files a dump keeps: "
                     r"--temp-files-max\)", said),
           f"the dump names the input file it does not keep: {said.strip()[-300:]}")
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
def hinted_file_replaced_after_the_stop(env):
    # The file a job holds open, read from hints, replaced by another of the
    # same bytes (renamed over it, as careful programs write) once the dump
    # let the job go (snap holds still there: the phase job-released): the
    # job's file was named at the stop, so the dump succeeds (snap before
    # found it deleted then and failed). Killed and restored, the job goes
    # on to its end with every fd as it expects.
    out, ckpt, data = env.path("replaced.out"), env.path("replaced.ckpt"), env.path("replaced.dat")
    rounds = 30
    p = start([env.prog("fd_offsets"), data, "50", str(rounds), "50"], stdout_path=out)
    wait_lines(out, 3)
    phases = env.path("replaced.phases")
    d = subprocess.Popen([env.snap, "dump", "-v", "--pid", str(p.pid), "-o", ckpt],
                         env=dict(os.environ, SNAP_PHASE_LOG=phases,
                                  SNAP_PHASE_PAUSE="job-released"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: os.path.exists(phases) and "job-released" in open(phases).read(), 60,
             "snap let the job go")
    with open(data, "rb") as f, open(data + ".new", "wb") as g:
        g.write(f.read())
    os.replace(data + ".new", data)
    _, err = d.communicate(timeout=60)
    hinted = re.search(r"(\d+) of (\d+) fds read from hints", err)
    expect(d.returncode == 0 and hinted and int(hinted.group(1)) >= 50,
           f"the dump, its fds read from hints, succeeded: {d.returncode} {err.strip()[-400:]}")
    at_dump = len(lines_of(out))
    wait_lines(out, at_dump + 2)
    p.kill()
    p.wait()
    r = env.snap_run("restore", ckpt, check=False, timeout=120)
    got = lines_of(out)
    expect(r.returncode == 0 and got == [f"{i} ok" for i in range(1, rounds + 1)],
           f"restored from the dump point to the end (exit {r.returncode}; {r.stderr.strip()}; "
           f"{[l for l in got if 'ok' not in l][:3] or got[-3:]})")


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
def aio_uncollected_kept(env):
    # Completions left in an AIO ring the job has not collected, its head
    # and tail past a wrap (tests/programs/aio_job.c --uncollected): the
    # restore brings the remade ring to the same head and tail (the kernel
    # keeps its own tail: by requests that complete at once) and puts the
    # job's events in their slots, so the job collects the same three
    # events after the restore, and goes on using the context.
    argv = [env.prog("aio_job"), "--uncollected", "8", "150"]
    _, ref = uninterrupted(argv)
    expect(len(ref) == 13 and ref[0] == "ring head 3 tail 6" and "data 1001 res 16" in ref[9],
           f"an uninterrupted run collects its events: {ref}")
    dump_kill_restore(env, argv, "aio_uncollected", 3, ref)


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
    expect_dump_refused(env, p, "stale",
                        [f"pid {p.pid} fd {ep} (epoll)", f"no longer open as fd {closed}"],
                        "pid, epoll fd and watched fd")


def anon_fds_expected(limit, inotify=True):
    """What tests/programs/anon_fds prints."""
    return [f"{i}: signal 10, timer every 150 ms, "
            + (f"inotify wd 2 (dir 2 file 3) created f{i}, " if inotify
               else "inotify wd 0 (dir 0 file 0) created -, ")
            + "flock 1 posix 1 ofd 1 lease write" for i in range(1, limit + 1)]


@case
def signalfd_timerfd_inotify_locks(env):
    # An epoll over a signalfd (its mask; the signal sent through a pidfd of
    # the job's own), a timerfd (its period) and an inotify fd (its watches,
    # under their own numbers 2 and 3), with an flock, a POSIX and an OFD
    # lock and a write lease (its file in the test's directory under /tmp,
    # which the dump must not open): all come back and the run continues
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
def locks_leave_running(env):
    # The same job (locks and a write lease on files in the test's directory
    # under /tmp) dumped while it runs on: the dump must not open the leased
    # file (any open breaks a write lease: the job would get SIGIO, lose the
    # lease, and the dump wait 45 s for the stopped job to give it up). The
    # job runs to its end holding all; restored, it ends as an uninterrupted run.
    out, ckpt = env.path("locks_running.out"), env.path("locks_running.ckpt")
    expected = anon_fds_expected(12, False)
    p = start([env.prog("anon_fds"), "12", "150", env.path("locks_dir"), "--no-inotify"],
              stdout_path=out)
    wait_lines(out, 4)
    env.snap_run("dump", "--pid", str(p.pid), "-o", ckpt, timeout=30)
    runs_on_then_restores(env, p, out, ckpt, expected)


@case
def sqlite_wal_locks(env):
    # SQLite in WAL mode (tests/programs/sqlite_wal.py): the job maps the
    # -shm file it holds POSIX locks on, and holds a POSIX lock on a data
    # file it maps. Such a dump was refused (the restore's open and close
    # of each mapped file would have dropped the locks); now the locks are
    # taken last. The restored job goes on, another process reads the
    # database through its own connection, and a child finds the job
    # holding its lock. Its output is an uninterrupted run's.
    rounds = 10
    where_ref, where = env.path("wal_ref"), env.path("wal")
    os.makedirs(where_ref)
    os.makedirs(where)
    prog = [sys.executable, env.src("sqlite_wal.py"), str(rounds), "150"]
    status, expected = uninterrupted(prog + [where_ref])
    expect(status == 0 and len(expected) == rounds + 3,
           f"an uninterrupted run ({status}, {expected[-3:]})")
    dump_kill_restore(env, prog + [where], "sqlite_wal", 3, expected)
    # The -shm file it maps shared and locks is not put back at restore (a
    # data file mapped shared is: data_file_mapped_shared), nor remade as
    # shared memory in a temporary directory (this job's: it is carried as
    # the database is, remade only where gone): it goes with the WAL and
    # the database, which a restore leaves as they are.
    def wal_index_mappings(ckpt):
        manifest = json.loads(env.snap_run("info", "--manifest", ckpt).stdout)
        return [m for q in manifest["checkpoint"]["processes"] for m in q["mappings"]
                if m.get("path", "").endswith("-shm")]

    shm = wal_index_mappings(env.path("sqlite_wal.ckpt"))
    expect(shm and not any("saved_file" in m or "named_shm" in m for m in shm),
           f"in a temporary directory, the WAL index is mapped as a file: {shm}")
    # Also outside the temporary directories, where such a file would be a
    # data file: in a directory under root's home.
    if os.geteuid() != 0:
        print("skip: the WAL index outside the temporary directories is checked as root only "
              "(a directory under root's home)")
        return
    home = tempfile.mkdtemp(prefix="snap-e2e-wal-", dir=os.path.expanduser("~"))
    try:
        p = start(prog + [home], stdout_path=env.path("sqlite_home.out"))
        wait_lines(env.path("sqlite_home.out"), 3)
        ckpt = env.path("sqlite_home.ckpt")
        env.snap_run("dump", "--pid", str(p.pid), "-o", ckpt)
        p.wait()
        shm = wal_index_mappings(ckpt)
        expect(shm and not any("saved_file" in m or "named_shm" in m for m in shm),
               f"the WAL index is mapped, not saved: {shm}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


@case
def inotify_deleted_target(env):
    # A watch on a file the job unlinked but keeps open comes back on the
    # remade (and again unlinked) file: the job's fchmod through its fd is
    # still reported by the watch, under its number 3.
    expected = [line + ", deleted file's watch reports attrib" for line in anon_fds_expected(12)]
    dump_kill_restore(env, [env.prog("anon_fds"), "12", "150", env.path("anon_dir"),
                            "--unlink-watched"], "anon_fds", 4, expected)


@case
def inotify_queued_events_said(env):
    # An event queued unread at the dump (a file made in the watched
    # directory before the first tick, read only at the end) cannot go into
    # the image: inotify shows it only by taking it from the job and takes
    # none back. The dump says so, naming pid and fd (the snap before lost
    # it without a word); the restored job finds its watch again (the file
    # it makes after its last tick is reported) and that one event gone, as
    # the dump said.
    d, out, ckpt = env.path("queued_dir"), env.path("queued.out"), env.path("queued.ckpt")
    os.makedirs(d)
    ticks = [f"tick {i}" for i in range(1, 13)]
    p = start([env.prog("inotify_queued"), d, "12", "150"], stdout_path=out)
    wait_lines(out, 3)
    ifd = next(int(n) for n in os.listdir(f"/proc/{p.pid}/fd")
               if os.readlink(f"/proc/{p.pid}/fd/{n}") == "anon_inode:inotify")
    r = env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
    said = f"pid {p.pid} fd {ifd} (inotify): 32 byte(s) of events were queued unread at the dump"
    expect(said in r.stderr, f"the dump says the queued event is lost ({r.stderr.strip()})")
    p.wait()
    os.unlink(os.path.join(d, "early"))
    r = env.snap_run("restore", ckpt, check=False)
    expect(r.returncode == 0 and lines_of(out) == ticks + ["created late"],
           f"restored, the job goes on with its watch and without the event ({r.returncode}, "
           f"{r.stderr.strip()}; {lines_of(out)[-3:]}; uninterrupted: 'created early late')")


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
    expect_dump_refused(env, p, "gone", [f"pid {p.pid} fd ", "(inotify): watch 3",
                                         "no fd or mapping of the job holds it"],
                        "pid, inotify fd and watch")
    os.close(outside)


@case
def unknown_anon_fd_refused(env):
    # An anonymous-inode fd restore does not know (here a userfaultfd) is
    # refused at dump, naming pid, fd and object, before --kill ends the job.
    out = env.path("uffd.out")
    p = start([env.prog("anon_fds"), "--userfaultfd"], stdout_path=out)
    wait_lines(out, 1)
    fd = lines_of(out)[0].split()[1]
    expect_dump_refused(env, p, "uffd", [f"pid {p.pid} fd {fd} (anon_inode:[userfaultfd])",
                                         "cannot restore this kind of file"],
                        "pid, fd and object")


@case
def fifo_data_pipe_size(env):
    # Bytes waiting in a FIFO the job holds O_RDWR, a pipe grown with
    # F_SETPIPE_SZ and its read end's O_NONBLOCK, owner and signal come back.
    expected = [f"{i}: fifo {chr(ord('a') + (i - 1) % 26)}, pipe size 1048576, nonblock 1, "
                "owner self 1, signal 12" for i in range(1, 11)]
    dump_kill_restore(env, [env.prog("fifo_state"), "10", "150", env.path("state.fifo")],
                      "fifo_state", 3, expected)


@case
def pipe_opened_twice(env):
    # One pipe end opened again through /proc/self/fd: two open file
    # descriptions, only one O_NONBLOCK; both come back, on the same pipe.
    expected = [f"{i}: read {chr(ord('a') + i % 26)} via {'pipe' if i % 2 else 'reopened'}, "
                "nonblock 0 1" for i in range(1, 11)]
    dump_kill_restore(env, [env.prog("pipe_reopen"), "10", "150"], "pipe_reopen", 3, expected)


def pty_lines_expected(lines):
    def got(i):  # tests/programs/pty_lines.py: ^D ends every third line, VEOL some others
        if i % 6 == 0:
            return "b''"
        return f"b'line {i}'" if i % 3 == 0 else f"b'line {i};'" if i % 4 == 0 else f"b'line {i}\\n'"
    return [f"got {got(i)} 40x132" for i in range(1, lines + 1)] + [
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


def dumped_after_3_lines(env, name, argv, *options):
    """argv started with its stdout to NAME.out and dumped (with `options`)
    to NAME.ckpt once it printed 3 lines: (the process, out, ckpt); with
    --kill, ended and reaped."""
    out, ckpt = env.path(name + ".out"), env.path(name + ".ckpt")
    p = start(argv, stdout_path=out)
    wait_lines(out, 3)
    env.snap_run("dump", *options, "--pid", str(p.pid), "-o", ckpt)
    if "--kill" in options:
        p.wait()
        reap_killed_children()
    return p, out, ckpt


def restores_to(env, ckpt, out, ref):
    """ckpt restores, and the job's output file `out` ends as `ref`."""
    r = env.snap_run("restore", ckpt, check=False, timeout=120)
    expect(r.returncode == 0 and lines_of(out) == ref,
           f"restored, it ends as an uninterrupted run ({r.stderr.strip()[-400:]}; "
           f"{lines_of(out)[-2:]})")


@case
def deleted_map_no_fd(env):
    # A file the job maps privately, holds no fd on, and that is deleted
    # while it runs (tests/programs/deleted_map.py: a library replaced under
    # a running program). As root the dump saves the file (through
    # /proc/PID/map_files); as an ordinary user, who may not open that, it
    # saves every page of the mapping, read through it, as private memory
    # (snap info shows it anonymous, all 65 pages dumped). Either way the
    # restored job ends as an uninterrupted run: the pages it never wrote
    # still hold the deleted file's bytes.
    ref_dir, job_dir = env.path("deleted_map_ref"), env.path("deleted_map_job")
    os.makedirs(ref_dir)
    os.makedirs(job_dir)
    status, ref = uninterrupted([sys.executable, env.src("deleted_map.py"), ref_dir, "12", "0"])
    expect(status == 0 and len(ref) == 12, f"an uninterrupted run ends: {status}, {ref[-2:]}")
    _, out, ckpt = dumped_after_3_lines(
        env, "deleted_map", [sys.executable, env.src("deleted_map.py"), job_dir, "12", "0.2"],
        "--kill")
    j = json.loads(env.snap_run("info", "--json", ckpt).stdout)
    m = [(m["kind"], m["pages_dumped"]) for m in j["processes"][0]["mappings"]
         if m["path"] == os.path.join(job_dir, "data") + " (deleted)"]
    want = ("anonymous", 65) if os.environ.get("SNAP_TEST_UNPRIVILEGED") else ("file", 3)
    expect(len(m) == 1 and m[0][0] == want[0] and m[0][1] >= want[1],
           f"the mapping is saved as {want[0]} ({m})")
    restores_to(env, ckpt, out, ref)


@case
def memfd_run_as_program(env):
    # A job that keeps a program in a memfd and runs it each line with
    # execveat(fd, "", AT_EMPTY_PATH) (tests/programs/memfd_exec.c): the
    # restored memfd is not held open for writing by anything but the
    # job's own fd, so the exec still works (it failed with ETXTBSY when the
    # fd was remade by an open of /proc/self/fd); the output is an
    # uninterrupted run's.
    expected = [f"{i} ran=7" for i in range(1, 9)]
    dump_kill_restore(env, [env.prog("memfd_exec"), "8", "150"], "memfd_exec", 3, expected)


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


def damaged_copy(env, ckpt, name):
    """A copy of image `ckpt` at NAME with one bit flipped in the middle of
    pages.bin: its restore fails once it reads that block."""
    bad = env.path(name)
    shutil.copytree(ckpt, bad)
    pages = os.path.join(bad, "pages.bin")
    with open(pages, "r+b") as f:
        f.seek(os.path.getsize(pages) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x40]))
    return bad


def named_shm_argv(env, tag):
    """named_shm on a segment of its own in /dev/shm: (argv, its path),
    the segment removed when this test ends, whatever happened."""
    import atexit
    name = f"/snap-test-{tag}-{os.getpid()}"
    atexit.register(lambda: os.path.exists("/dev/shm" + name) and os.unlink("/dev/shm" + name))
    return [env.prog("named_shm"), name, "4", "40", "50"], "/dev/shm" + name


@case
def named_shm_cleaned_away(env):
    # A job keeping its state in /dev/shm (shm_open, mapped by it and its
    # child, kept open), dumped with --kill; the segment is then removed, as
    # when a site cleans /dev/shm after a job or the restore runs on another
    # node. The image holds its pages: the restore makes the file again, and
    # the job ends as an uninterrupted run, which unlinks it at its end.
    argv, path = named_shm_argv(env, "ref")
    _, ref = uninterrupted(argv, timeout=120)
    expect(ref and ref[0] == "ready" and ref[-1] == "done" and not any("CORRUPT" in l for l in ref),
           f"an uninterrupted run ends: {ref[-2:]}")
    argv, path = named_shm_argv(env, "gone")
    out, ckpt = env.path("named_shm.out"), env.path("named_shm.ckpt")
    p = start(argv, stdout_path=out)
    wait_lines(out, 6)
    r = env.snap_run("dump", "-v", "--kill", "--pid", str(p.pid), "-o", ckpt)
    expect(f"{path}: shared memory file ({(4 << 20) + 8} bytes), saved in the image" in r.stderr,
           f"the dump says it saved the segment: {r.stderr.strip()[-300:]}")
    p.wait()
    reap_killed_children()
    os.unlink(path)
    before = lines_of(out)
    # A restore that fails (a damaged block) after making the segment again
    # removes it: nothing is left in /dev/shm.
    bad = damaged_copy(env, ckpt, "named_shm_damaged.ckpt")
    r = env.snap_run("restore", bad, check=False, timeout=120)
    expect(r.returncode == 1 and "checksum" in r.stderr and not os.path.exists(path),
           f"a failed restore leaves no segment behind (exit {r.returncode}, "
           f"{os.path.exists(path)}): {r.stderr.strip()[-200:]}")
    r = env.snap_run("restore", ckpt, check=False, timeout=120)
    expect(r.returncode == 0 and lines_of(out) == ref,
           f"restored with its segment gone, it ends as an uninterrupted run (exit {r.returncode}, "
           f"{r.stderr.strip()[-300:]}; {len(before)} lines before, {lines_of(out)[-2:]})")
    expect(not os.path.exists(path), "the restored job unlinked its segment at its end")


@case
def temp_session_cleaned_away(env):
    # A job with a session directory in its $TMPDIR (tests/programs/
    # tmp_session.py: directories of modes 700 and 550, a small file and a
    # FIFO it holds open, a file it maps MAP_SHARED, a unix socket bound
    # there), dumped with --kill; then the whole $TMPDIR is removed, as on
    # another node or after a site's cleanup. A restore that fails (a
    # damaged block) leaves nothing behind; the restore makes what the job
    # held there again and the job ends as an uninterrupted run.
    tmpdir = env.path("tmpdir")
    os.makedirs(tmpdir)
    environ = dict(os.environ, TMPDIR=tmpdir)
    argv = [sys.executable, env.src("tmp_session.py"), "40", "50"]
    status, ref = uninterrupted(argv, timeout=120, environ=environ)
    expect(status == 0 and len(ref) == 41 and ref[-1] == "done" and os.listdir(tmpdir) == [],
           f"an uninterrupted run ends and removes its session: {status}, {ref[-2:]}")
    out, ckpt = env.path("tmp_session.out"), env.path("tmp_session.ckpt")
    p = start(argv, stdout_path=out, env=environ)
    wait_lines(out, 8)
    env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
    p.wait()
    info = env.snap_run("info", ckpt).stdout
    expect("in temporary directories (made again at restore where missing)" in info and
           re.search(r"file +0600 +16384 B +\S+/topo.sm", info) and
           re.search(r"fifo +0644 +\S+/0/attach_fifo", info),
           f"snap info lists what the image holds of them: {info[info.find('in temporary'):][:600]}")
    for d, _, _ in os.walk(tmpdir):  # as root cleans up: a read-only directory too
        os.chmod(d, 0o700)
    shutil.rmtree(tmpdir)
    before = lines_of(out)
    bad = damaged_copy(env, ckpt, "tmp_session_damaged.ckpt")
    r = env.snap_run("restore", bad, check=False, timeout=120)
    expect(r.returncode == 1 and "checksum" in r.stderr and not os.path.exists(tmpdir),
           f"a failed restore leaves nothing behind (exit {r.returncode}, $TMPDIR there: "
           f"{os.path.exists(tmpdir)}): {r.stderr.strip()[-200:]}")
    r = env.snap_run("restore", "-v", ckpt, check=False, timeout=120)
    expect(r.returncode == 0 and lines_of(out) == ref,
           f"restored with its $TMPDIR gone, it ends as an uninterrupted run (exit {r.returncode}, "
           f"{r.stderr.strip()[-300:]}; {len(before)} lines before, {lines_of(out)[-2:]})")
    expect("files and directories in temporary directories again" in r.stderr,
           f"the restore says it made them again: {r.stderr.strip()[-300:]}")
    expect(os.listdir(tmpdir) == [], f"the restored job removed its session: {os.listdir(tmpdir)}")
    print(f"ok   tmp_session: continued from line {len(before)} with its $TMPDIR made again")


def scratch_job(env, name, *more):
    """tests/programs/scratch_file.py with a 3 MiB scratch file in a $TMPDIR
    of its own (and `more` arguments): argv, environment, the file's path,
    an uninterrupted run's output."""
    tmpdir = env.path(name + "_tmpdir")
    os.makedirs(tmpdir)
    environ = dict(os.environ, TMPDIR=tmpdir)
    argv = [sys.executable, env.src("scratch_file.py"), "3", "30", "50", *more]
    status, ref = uninterrupted(argv, timeout=120, environ=environ)
    expect(status == 0 and len(ref) == 31 and ref[-1] == "done",
           f"an uninterrupted run ends: {status}, {ref[-2:]}")
    shutil.rmtree(os.path.join(tmpdir, "scratch"))
    return argv, environ, os.path.join(tmpdir, "scratch", "data.bin"), ref


def expect_scratch_in_image(env, ckpt, data):
    """snap info of ckpt lists the scratch file among the files in temporary
    directories, its contents in the page store, and not among the files the
    restore needs at their paths."""
    info = env.snap_run("info", ckpt).stdout
    expect(re.search(r"file +0644 +3145728 B +" + re.escape(data) + r"  \(its contents in the page store\)",
                     info) and
           re.search(r"of them 3\.0 MiB .*of files \(in temporary directories", info) and
           "files the restore opens at their paths, their contents not in the image: 0 " in info,
           f"snap info lists the file as held by the image: {info[info.find('in temporary'):][:900]}")
    j = json.loads(env.snap_run("info", "--json", ckpt).stdout)
    temp = [(t["path"], t["size"], t["data_in_pages"]) for t in j["temp_files"] if t["kind"] == "file"]
    expect((data, 3 << 20, True) in temp and j["needed_files"]["files"] == [] and
           j["stats"]["file_pages"] == 768,
           f"snap info --json says so: {temp}, {j['needed_files']}, {j['stats']['file_pages']}")


def scratch_killed_and_made_again(env, name, *more):
    """scratch_job(name, *more) dumped with --kill once it has printed 5
    lines: the image holds its file; the file's directory removed (another
    node, a site's cleanup), the restore makes it again, byte for byte, and
    the job ends as an uninterrupted run. Returns the restore's stderr."""
    argv, environ, data, ref = scratch_job(env, name, *more)
    out, ckpt = env.path(name + ".out"), env.path(name + ".ckpt")
    p = start(argv, stdout_path=out, env=environ)
    wait_lines(out, 5)
    r = env.snap_run("dump", "--kill", "--pid", str(p.pid), "-o", ckpt)
    p.wait()
    expect("not kept in the image" not in r.stderr,
           f"the dump keeps the scratch file: {r.stderr.strip()[-400:]}")
    expect_scratch_in_image(env, ckpt, data)
    with open(data, "rb") as f:
        original = f.read()
    shutil.rmtree(os.path.dirname(data))
    before = lines_of(out)
    r = env.snap_run("restore", "-v", ckpt, check=False, timeout=120)
    expect(r.returncode == 0 and lines_of(out) == ref,
           f"with the file gone the job ends as an uninterrupted run (exit {r.returncode}, "
           f"{r.stderr.strip()[-300:]}; {len(before)} lines before, {lines_of(out)[-2:]})")
    with open(data, "rb") as f:
        expect(f.read() == original, "the file made again is the file as it was")
    print(f"ok   {name}: continued from line {len(before)}, the file made again")
    return r.stderr


@case
def temp_scratch_file_carried(env):
    # A job holding a 3 MiB scratch file in its $TMPDIR (tests/programs/
    # scratch_file.py): more than the checkpoint's JSON keeps of such files,
    # so its contents go to the page store, and the restore makes it again
    # from there.
    said = scratch_killed_and_made_again(env, "scratch_file")
    expect("(3.0 MiB from the page store)" in said,
           f"the restore says it made the file from the page store: {said.strip()[-300:]}")


@case
def temp_scratch_file_mapped(env):
    # The same job mapping its scratch file privately and holding no fd on
    # it (a data file, or a library, a job maps from /tmp): the image keeps
    # the file, and the restore makes it again before mapping it.
    scratch_killed_and_made_again(env, "scratch_mapped", "map")


@case
def temp_scratch_file_carried_leave_running(env):
    # The same job dumped while it runs on (its file is read once it runs
    # again, and kept because nothing wrote to it since the stop); at its
    # end it overwrites part of the file and leaves it, as a job that goes on
    # after a checkpoint and then fails would. A restore with that file
    # there leaves it (it may be another process's file too) but says it
    # changed and that removing it has the saved one made again (seen on a
    # restore that then fails on a damaged block, so the job does not run on
    # the changed file); removed, the restore makes it again as it was at the
    # dump, and the job ends as an uninterrupted run.
    argv, environ, data, ref = scratch_job(env, "scratch_running", "scribble")
    out, ckpt = env.path("scratch_running.out"), env.path("scratch_running.ckpt")
    p = start(argv, stdout_path=out, env=environ)
    wait_lines(out, 5)
    r = env.snap_run("dump", "--pid", str(p.pid), "-o", ckpt)
    expect("not kept in the image" not in r.stderr,
           f"the dump keeps the scratch file: {r.stderr.strip()[-400:]}")
    expect_scratch_in_image(env, ckpt, data)
    p.wait()
    with open(data, "rb") as f:
        left = f.read()
    bad = damaged_copy(env, ckpt, "scratch_running_damaged.ckpt")
    r = env.snap_run("restore", bad, check=False, timeout=120)
    with open(data, "rb") as f:
        expect(r.returncode == 1 and "checksum" in r.stderr and f.read() == left and
               f"{data} (in a temporary directory) changed since the dump" in r.stderr and
               "removing it before the restore has that one made again" in r.stderr,
               f"a restore leaves the changed file as it is and says so (exit {r.returncode}): "
               f"{r.stderr.strip()[-400:]}")
    os.unlink(data)
    runs_on_then_restores(env, p, out, ckpt, ref)
    print("ok   temp_scratch_file_carried_leave_running: made again as it was at the dump")


@case
def named_shm_leave_running(env):
    # The same job dumped while it runs on: it rewrites its segment, ends
    # and unlinks it; then another file is left at that path. The restore
    # replaces it with the segment as it was at the dump (not as the job
    # left it), and the job ends as an uninterrupted run.
    argv, _ = named_shm_argv(env, "ref2")
    _, ref = uninterrupted(argv, timeout=120)
    argv, path = named_shm_argv(env, "running")
    out, ckpt = env.path("named_shm_running.out"), env.path("named_shm_running.ckpt")
    p = start(argv, stdout_path=out)
    wait_lines(out, 6)
    env.snap_run("dump", "--pid", str(p.pid), "-o", ckpt)
    p.wait()
    with open(path, "wb") as f:
        f.write(b"stale " * 1000)
    runs_on_then_restores(env, p, out, ckpt, ref)
    expect(not os.path.exists(path), "the restored job unlinked its segment at its end")


@case
def data_file_mapped_shared(env):
    # A job whose data is a file it maps shared and writes through memory
    # (tests/programs/mapped_data.c; numpy.memmap arrays, out-of-core
    # solvers), with data outside the part it maps (a header it writes
    # with pwrite: so not taken for shared memory although it lies under
    # /tmp, as the tests' directories do), dumped
    # while it runs on: it ends, having written on into the file after the
    # dump, then the restore continues it from the dump point, and it must
    # end as an uninterrupted run. The file then holds what the job wrote
    # after the dump: the restore writes back what the job had mapped of it
    # at the dump and zeroes what was a hole then (the snap before left the
    # file as it found it, and the restored job printed other sums).
    data_dir = env.path("mapped_data_dir")
    os.makedirs(data_dir)
    _, ref = uninterrupted([env.prog("mapped_data"), os.path.join(data_dir, "ref.dat"), "30", "60"],
                           timeout=60)
    expect(len(ref) == 30, f"an uninterrupted run prints 30 ticks: {ref[-2:]}")
    out, ckpt = env.path("mapped_data.out"), env.path("mapped_data.ckpt")
    p = start([env.prog("mapped_data"), os.path.join(data_dir, "job.dat"), "30", "60"],
              stdout_path=out)
    wait_lines(out, 6)
    d = env.snap_run("dump", "-v", "--pid", str(p.pid), "-o", ckpt)
    expect("job.dat: a file the job maps shared and may write" in d.stderr,
           f"the dump saved what the job maps of the file: {d.stderr.strip()[-300:]}")
    runs_on_then_restores(env, p, out, ckpt, ref)
    manifest = env.snap_run("info", "--manifest", ckpt).stdout
    expect('"saved_file"' in manifest, "the manifest marks the mapping saved_file")
    info = env.snap_run("info", ckpt).stdout
    expect("a data file mapped shared: what it maps is in the image" in info,
           f"snap info says so: {info[-400:]}")


@case
def data_file_mapped_shared_over_limit(env):
    # Past --shared-files-max the file is not saved: the dump warns, naming
    # it, and the restored job finds the file as the job left it.
    data_dir = env.path("mapped_over_dir")
    os.makedirs(data_dir)
    out, ckpt = env.path("mapped_over.out"), env.path("mapped_over.ckpt")
    p = start([env.prog("mapped_data"), os.path.join(data_dir, "job.dat"), "30", "60"],
              stdout_path=out)
    wait_lines(out, 3)
    d = env.snap_run("dump", "--shared-files-max", "8K", "--pid", str(p.pid), "-o", ckpt)
    p.kill()
    p.wait()
    expect("job.dat shared and may write it" in d.stderr and "not saved" in d.stderr,
           f"the dump warned, naming the file: {d.stderr.strip()[-300:]}")
    manifest = env.snap_run("info", "--manifest", ckpt).stdout
    expect('"saved_file"' not in manifest and "job.dat" in manifest,
           "the image maps the file but holds none of it")


def sweep_job(env, name, per_tick, extra=()):
    """tests/programs/mapped_sweep over a 128 MiB data file in a directory
    of the test's own (off tmpfs, where the dump reads such files while the
    job runs), 3000 ticks of `per_tick` pages 1 ms apart: its argv and an
    uninterrupted run's output."""
    where = env.path(name + "_dir")
    os.makedirs(where)
    fs = subprocess.run(["stat", "-f", "-c", "%T", where], capture_output=True, text=True).stdout
    if fs.strip() == "tmpfs":
        raise Skip(f"{where} is on tmpfs, whose files the dump reads as shared memory")
    args = ["128", "3000", str(per_tick), "1", *extra]
    _, ref = uninterrupted([env.prog("mapped_sweep"), os.path.join(where, "ref.dat"), *args],
                           timeout=120)
    expect(len(ref) == 3001 and ref[-1].startswith("sum "),
           f"an uninterrupted run prints 3000 ticks and a sum: {ref[-2:]}")
    return [env.prog("mapped_sweep"), os.path.join(where, "job.dat"), *args], ref


@case
def data_file_read_while_running(env):
    # A job sweeping over a 128 MiB data file it maps shared
    # (tests/programs/mapped_sweep.c: 4096 pages rewritten each tick, the
    # rest of each page random bytes, stored raw) is dumped while it runs:
    # the file's data is read as the job runs on, its pages write-protected
    # first (an asynchronous userfaultfd: the job's writes are only noted),
    # and with the job stopped only the pages it wrote meanwhile are read
    # again, taking the places of their first copies in the page store
    # (room reserved for them before the stop), not stored twice. The job
    # runs to its end; restored, it continues from the dump point and must
    # end as an uninterrupted run (its last line sums the whole file). With
    # that second reading left out, the restored job printed another sum in
    # 3 of 3 runs here.
    argv, ref = sweep_job(env, "sweep", 4096, ["random"])
    out, ckpt = env.path("sweep.out"), env.path("sweep.ckpt")
    p = start(argv, stdout_path=out)
    wait_lines(out, 300)
    d = env.snap_run("dump", "-v", "--pid", str(p.pid), "-o", ckpt)
    expect("128.0 MiB read while the job ran" in d.stderr and
           "written since, read again now" in d.stderr,
           f"the dump read the file while the job ran: {d.stderr.strip()[-600:]}")
    over = re.search(r"(\d+) pages written over pages given before and forgotten", d.stderr)
    expect(over and int(over.group(1)) > 0,
           f"pages read again took their first copies' places: {over and over.group(0)}")
    runs_on_then_restores(env, p, out, ckpt, ref)


@case
def data_file_written_with_write_read_while_stopped(env):
    # The same job writing one page of each tick with pwrite(2), which no
    # page table shows: the file's inotify watch sees it, what was read
    # while the job ran is not used, and the file is read while the job is
    # stopped, as before. Restored, the job ends as an uninterrupted run.
    # The job writes so every millisecond or two; a dump whose reading
    # (tens of ms) it slept through, unscheduled on a busy machine, read
    # the file rightly while it ran and is made again, up to 3 times.
    argv, ref = sweep_job(env, "sweep_pwrite", 64, ["pwrite"])
    out, ckpt = env.path("sweep_pwrite.out"), env.path("sweep_pwrite.ckpt")
    p = start(argv, stdout_path=out)
    wait_lines(out, 300)
    for attempt in range(3):
        shutil.rmtree(ckpt, ignore_errors=True)
        d = env.snap_run("dump", "-v", "--pid", str(p.pid), "-o", ckpt)
        if "is not used (written other than through the mapping" in d.stderr:
            break
    expect("is not used (written other than through the mapping" in d.stderr,
           f"the dump saw the write(2) and read the file while the job was stopped "
           f"(3 dumps): {d.stderr.strip()[-600:]}")
    runs_on_then_restores(env, p, out, ckpt, ref)


def big_ghosts_job(env, name):
    """tests/programs/big_ghosts.py in a directory of its own: argv, the
    directory, an uninterrupted run's output."""
    ref_dir, job_dir = env.path(name + "_ref"), env.path(name + "_job")
    os.makedirs(ref_dir)
    os.makedirs(job_dir)
    status, ref = uninterrupted([sys.executable, env.src("big_ghosts.py"), ref_dir, "12", "0"],
                                timeout=120)
    expect(status == 0 and len(ref) == 12, f"an uninterrupted run ends: {status}, {ref[-2:]}")
    return [sys.executable, env.src("big_ghosts.py"), job_dir, "12", "0.3"], job_dir, ref


def expect_big_ghosts_in_image(env, ckpt):
    """snap info of ckpt lists the job's memfd and deleted files with their
    contents in the page store: 54 MiB of them, since the MiB of the memfd
    that the job maps shared is kept once, as that mapping's pages."""
    info = env.snap_run("info", ckpt).stdout
    expect(re.search(r"memfd +0777 +75497472 B +snap-big  \(its contents in the page store\)", info)
           and re.search(r"file +0640 +3145728 B +\S+/scratch  \(its contents in the page store\)",
                         info)
           and re.search(r"of them 54\.0 MiB .*of files", info),
           f"snap info lists them in the page store: "
           f"{info[info.find('deleted files and'):][:600]}")


@case
def deleted_files_large(env):
    # A job holding a 72 MiB memfd (40 MiB of random bytes, a hole; its
    # first MiB mapped shared), a 12 MiB TemporaryFile (O_TMPFILE) and an
    # unlinked 3 MiB scratch file (tests/programs/big_ghosts.py): more than
    # the checkpoint's JSON keeps, so their contents go to the page store.
    # Dumped with --kill: snap info lists them so, the restore makes them
    # again, and the job ends as an uninterrupted run (its digests of the
    # three files' whole contents each round), leaving nothing behind.
    argv, job_dir, ref = big_ghosts_job(env, "big_ghosts")
    _, out, ckpt = dumped_after_3_lines(env, "big_ghosts", argv, "--kill")
    expect_big_ghosts_in_image(env, ckpt)
    restores_to(env, ckpt, out, ref)
    expect(os.listdir(job_dir) == [], f"nothing left in the job's directory: {os.listdir(job_dir)}")


@case
def deleted_files_large_leave_running(env):
    # The same job dumped while it runs on: the files are read while it is
    # stopped, so the image holds them as they were then, not as the job
    # goes on writing them; after it ends, the restore continues it from
    # the dump point and it ends as an uninterrupted run.
    argv, _, ref = big_ghosts_job(env, "big_ghosts_running")
    p, out, ckpt = dumped_after_3_lines(env, "big_ghosts_running", argv)
    expect_big_ghosts_in_image(env, ckpt)
    runs_on_then_restores(env, p, out, ckpt, ref)


def anon_shm_file_job(env, name, *more):
    """tests/programs/anon_shm_file (anonymous shared memory opened through
    /proc/self/map_files and mapped again, shared and private): (argv, its
    uninterrupted output). Opening map_files needs root."""
    if os.environ.get("SNAP_TEST_UNPRIVILEGED") or os.geteuid() != 0:
        raise Skip("the job opens /proc/self/map_files, which needs root")
    argv = [env.prog("anon_shm_file"), "12", "150", *more]
    status, ref = uninterrupted([env.prog("anon_shm_file"), "12", "0", *more])
    expect(status == 0 and len(ref) == 12, f"an uninterrupted run ends: {status}, {ref[-2:]}")
    return argv, ref


@case
def anon_shared_memory_as_file(env):
    # The restored object is one again: the private mapping's pages the job
    # had not written follow what the shared mappings write after the
    # restore, its copied ones keep what the job wrote, and the fd reads the
    # same object. The snap before (the private mapping restored as private
    # memory, the fd as a file of its own) prints other sums from the
    # restore on.
    argv, ref = anon_shm_file_job(env, "anon_shm_file")
    _, out, ckpt = dumped_after_3_lines(env, "anon_shm_file", argv, "--kill")
    restores_to(env, ckpt, out, ref)


@case
def anon_shared_memory_as_file_leave_running(env):
    # The same with the fd closed before the ticks (only the private mapping
    # holds the object as a file), dumped while the job runs on.
    argv, ref = anon_shm_file_job(env, "anon_shm_file_closed", "closed")
    p, out, ckpt = dumped_after_3_lines(env, "anon_shm_file_closed", argv)
    runs_on_then_restores(env, p, out, ckpt, ref)


def quiet_scratch_job(env, name):
    """tests/programs/quiet_scratch.py (24 MiB of an unlinked scratch file,
    written once, then read each tick) in a directory of its own: (argv,
    an uninterrupted run's output)."""
    ref_dir, job_dir = env.path(name + "_ref"), env.path(name + "_job")
    os.makedirs(ref_dir)
    os.makedirs(job_dir)
    script = env.src("quiet_scratch.py")
    status, ref = uninterrupted([sys.executable, script, ref_dir, "24", "12", "0", "9"])
    expect(status == 0 and len(ref) == 12, f"an uninterrupted run ends: {status}, {ref[-2:]}")
    return [sys.executable, script, job_dir, "24", "12", "0.4", "9"], ref


def quiet_scratch_started(env, name):
    """quiet_scratch_job started with its stdout to NAME.out, once it
    printed 3 lines: (the process, out, NAME.ckpt, the uninterrupted run's
    output)."""
    argv, ref = quiet_scratch_job(env, name)
    out, ckpt = env.path(name + ".out"), env.path(name + ".ckpt")
    p = start(argv, stdout_path=out)
    wait_lines(out, 3)
    return p, out, ckpt, ref


# What counts as quiet in these tests: a second (a minute otherwise).
QUIET = dict(os.environ, SNAP_QUIET_FILE_SECONDS="1")


@case
def deleted_file_quiet_read_after_freeze(env):
    # A deleted file the job has not changed for a while (here 1 s:
    # SNAP_QUIET_FILE_SECONDS) is read once the job runs again, not while
    # it is stopped, and checked unchanged after: the dump says so (-v), and
    # the restore of that image, once the job ended, ends as an
    # uninterrupted run (the snap before read it while the job was stopped).
    p, out, ckpt, ref = quiet_scratch_started(env, "quiet_scratch")
    d = env.snap_run("dump", "-v", "--pid", str(p.pid), "-o", ckpt, env=QUIET)
    expect(re.search(r"24\.0 MiB of deleted files and memfds unchanged for 1 s before the dump "
                     r"stored while the job ran", d.stderr),
           f"the dump read the file after the freeze: "
           f"{[l for l in d.stderr.splitlines() if 'deleted files' in l]}")
    runs_on_then_restores(env, p, out, ckpt, ref)


@case
def deleted_file_changed_while_read_refused(env):
    # The same file, written (the same bytes, so the job's output does not
    # change) through /proc/PID/fd by someone else once the dump let the job
    # go (snap holds still there: the phase job-released): the dump fails,
    # naming the file, and leaves no image; the job runs on to its end.
    p, out, ckpt, ref = quiet_scratch_started(env, "quiet_changed")
    fd = next(f for f in os.listdir(f"/proc/{p.pid}/fd")
              if os.readlink(f"/proc/{p.pid}/fd/{f}").endswith("scratch (deleted)"))
    phases = env.path("quiet_changed.phases")
    d = subprocess.Popen([env.snap, "dump", "--pid", str(p.pid), "-o", ckpt],
                         env=dict(QUIET, SNAP_PHASE_LOG=phases, SNAP_PHASE_PAUSE="job-released"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: os.path.exists(phases) and "job-released" in open(phases).read(), 60,
             "snap let the job go")
    with open(f"/proc/{p.pid}/fd/{fd}", "r+b") as f:
        same = os.pread(f.fileno(), 4096, 8 << 20)
        os.pwrite(f.fileno(), same, 8 << 20)
    _, err = d.communicate(timeout=60)
    expect(d.returncode == 1 and "scratch (deleted)) changed while snap read it" in err
           and "dump again" in err, f"the dump failed, naming the file: {d.returncode} {err.strip()}")
    expect(not os.path.exists(ckpt), "no image was left")
    ran_on_to_its_end(p, out, ref, timeout=60)


@case
def with_files_quiet_changed_refused(env):
    # A file of --with-files quiet before the stop (input.bin of
    # tests/programs/history_file.py), written (the same bytes) by someone
    # else once the dump let the job go: the dump fails, naming it, and
    # leaves no image; the job runs on to its end.
    p, d, out, ckpt, ref = history_job_started(env, "quiet_kept", 20, 2)
    time.sleep(1.2)
    phases = env.path("quiet_kept.phases")
    r = subprocess.Popen([env.snap, "dump", "--pid", str(p.pid), "-o", ckpt, "--with-files", d],
                         env=dict(QUIET, SNAP_PHASE_LOG=phases, SNAP_PHASE_PAUSE="job-released"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: os.path.exists(phases) and "job-released" in open(phases).read(), 60,
             "snap let the job go")
    path = os.path.join(d, "input.bin")
    with open(path, "r+b") as f:
        same = os.pread(f.fileno(), 4096, 1 << 20)
        os.pwrite(f.fileno(), same, 1 << 20)
    _, err = r.communicate(timeout=60)
    expect(r.returncode == 1 and f"--with-files: {path} changed while snap read it" in err,
           f"the dump failed, naming the file: {r.returncode} {err.strip()}")
    expect(not os.path.exists(ckpt), "no image was left")
    ran_on_to_its_end(p, out, ref, timeout=60)


if __name__ == "__main__":
    main()
