#!/usr/bin/env python3
"""End-to-end tests of the snap command line: help, usage errors, snap check.

Usage: cli_test.py SNAP [--unprivileged]
With --unprivileged, runs `snap check` as nobody (uid 65534) through setpriv;
exits 77 (meson's "skipped") with the reason when that cannot be done here.
"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from snaptest import check as expect, checks_result  # noqa: E402

SKIP = 77


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)




def check_text(prefix, argv):
    p = run(argv + ["check"])
    expect(p.returncode in (0, 1), f"{prefix}snap check exits 0 or 1", p)
    lines = p.stdout.splitlines()
    expect(len(lines) >= 2, f"{prefix}snap check prints probes and a verdict", p)
    if not lines:
        return
    *probes, verdict = lines
    # What works for this user: "dump: yes: ...", "restore: no: ...", ...
    summary = {}
    for line in probes:
        for title in ("dump", "restore", "restore in a new user+pid namespace"):
            if line.startswith(title + ": "):
                summary[title] = line[len(title) + 2:]
    probes = [line for line in probes if not any(line.startswith(t + ": ") for t in
                                                 ("dump", "restore", "restore in a new user+pid namespace"))]
    expect(len(summary) == 3, f"{prefix}summary lines for dump, restore and restore in a namespace: {summary}")
    for title, text in summary.items():
        expect(text.startswith(("yes: ", "no: ")) and len(text) > 8,
               f"{prefix}{title}: yes or no, and why: {text!r}")
    for line in probes:
        status = line.split()[0] if line.split() else ""
        expect(status in ("ok", "missing"), f"{prefix}probe line starts with ok/missing: {line!r}")
    can = verdict.startswith("snap can dump and restore")
    cannot = verdict.startswith("snap cannot dump and restore")
    expect(can or cannot, f"{prefix}last line is the verdict: {verdict!r}")
    expect((p.returncode == 0) == can, f"{prefix}exit status matches the verdict", p)
    for needed in ("ptrace attach", "process_vm_readv", "pagemap", "set_tid", "namespaces"):
        expect(any(needed in line for line in probes), f"{prefix}a line for {needed}")
    return summary


def check_json(prefix, argv):
    p = run(argv + ["check", "--json"])
    expect(p.returncode in (0, 1), f"{prefix}snap check --json exits 0 or 1", p)
    try:
        doc = json.loads(p.stdout)
    except json.JSONDecodeError as e:
        expect(False, f"{prefix}snap check --json prints valid JSON ({e})", p)
        return None
    expect(isinstance(doc.get("probes"), list) and doc["probes"], f"{prefix}JSON has probes")
    for pr in doc.get("probes", []):
        expect(all(k in pr for k in ("id", "title", "ok", "need", "message")),
               f"{prefix}JSON probe {pr.get('id')} has id/title/ok/need/message")
    expect(doc.get("can_dump_restore") == (p.returncode == 0),
           f"{prefix}JSON can_dump_restore matches the exit status", p)
    ids = [s.get("id") for s in doc.get("summary", [])]
    expect(ids == ["dump", "restore", "restore_userns"], f"{prefix}JSON summary dump/restore/restore_userns: {ids}")
    for s in doc.get("summary", []):
        expect(isinstance(s.get("ok"), bool) and s.get("why"), f"{prefix}JSON summary {s.get('id')} has ok and why")
    return doc


def expect_restore_copies(prefix, doc):
    """This kernel lets any user create the userfaultfd a restore fills
    memory with (restore/page_copier.h): `snap check` must say so."""
    uffd = next((pr for pr in (doc or {}).get("probes", []) if pr["id"] == "userfaultfd"), {})
    expect("restore fills private memory with UFFDIO_COPY" in uffd.get("message", ""),
           f"{prefix}the userfaultfd line says restore fills memory with UFFDIO_COPY: "
           f"{uffd.get('message')!r}")


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    snap = os.path.abspath(sys.argv[1])

    if "--unprivileged" in sys.argv[2:]:
        setpriv = shutil.which("setpriv")
        if not setpriv:
            print("SKIP: setpriv is not installed (util-linux)")
            return SKIP
        if os.geteuid() != 0:
            print("SKIP: not root, cannot switch to uid 65534")
            return SKIP
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", snap]
        p = run(argv + ["--version"])
        if p.returncode != 0:
            print(f"SKIP: uid 65534 cannot run {snap}: {p.stderr.strip()}")
            return SKIP
        summary = check_text("[uid 65534] ", argv) or {}
        doc = check_json("[uid 65534] ", argv)
        # This machine lets ordinary users make user and pid namespaces (and
        # has no Yama): an ordinary user can dump its own jobs and restore
        # them in a new user+pid namespace, but not in place (no set_tid).
        ns = summary.get("restore in a new user+pid namespace", "")
        expect(ns.startswith("yes: "), f"[uid 65534] restore in a new user+pid namespace works here: {ns!r}")
        expect(summary.get("dump", "").startswith("yes: "), f"[uid 65534] dump works: {summary.get('dump')!r}")
        expect(summary.get("restore", "").startswith("no: ") and "set_tid" in summary.get("restore", ""),
               f"[uid 65534] restore in place says set_tid is missing: {summary.get('restore')!r}")
        if doc:
            expect(doc.get("euid") == 65534, "[uid 65534] JSON reports euid 65534")
            caps = {pr["id"]: pr["ok"] for pr in doc["probes"]}
            expect(caps.get("cap_sys_admin") is False, "[uid 65534] has no CAP_SYS_ADMIN")
        expect_restore_copies("[uid 65534] ", doc)
    else:
        p = run([snap, "--version"])
        expect(p.returncode == 0 and p.stdout.startswith("snap "), "snap --version", p)
        p = run([snap, "--help"])
        expect(p.returncode == 0 and "check" in p.stdout, "snap --help lists check", p)
        p = run([snap, "help", "check"])
        expect(p.returncode == 0 and "--json" in p.stdout, "snap help check", p)
        p = run([snap, "check", "--help"])
        expect(p.returncode == 0 and "--json" in p.stdout, "snap check --help", p)
        p = run([snap, "nosuch"])
        expect(p.returncode == 2 and "nosuch" in p.stderr and not p.stdout,
               "unknown command: exit 2, message on stderr", p)
        p = run([snap, "check", "--bogus"])
        expect(p.returncode == 2 and "bogus" in p.stderr, "unknown option to check: exit 2", p)
        p = run([snap, "help", "nosuch"])
        expect(p.returncode == 2 and "nosuch" in p.stderr, "snap help nosuch: exit 2", p)
        p = run([snap])
        expect(p.returncode == 2, "no command: exit 2", p)
        check_text("", [snap])
        expect_restore_copies("", check_json("", [snap]))

    return checks_result()


if __name__ == "__main__":
    sys.exit(main())
