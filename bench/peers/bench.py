#!/usr/bin/env python3
"""Run one peer command N times; record wall time, peak RSS, the RESULT line.

    python bench.py --name duckdb --dataset S1000_H72 --runs 3 --out results.jsonl -- \
        /tmp/peers-venv/main/bin/python peer_duckdb.py /tmp/peers-data/S1000_H72/events.parquet

* wall_s: end to end, process start to exit (interpreter/JVM start, imports, reading
  the input, computing, printing).  Input files are in the page cache (warm).
* peak_rss_mb: max over 20 Hz samples of the summed RSS of the whole process tree
  (PyFlink's JVM is a child of the Python process), and at least the main
  process's own ru_maxrss (maxrss_main_mb).
* load1: the 1-minute load average when the run started (the machine is shared).
Runs are strictly sequential.  Uses psutil when installed, else reads /proc (Linux).

forewarn changes (bench/peers/SOURCE.md): --tag KEY=VALUE fields are copied into every
record; a command that cannot be started (not installed) is recorded as a failed run
(rc 127) instead of a traceback; the process-tree RSS falls back to /proc without psutil.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

try:
    import psutil
except ImportError:  # smoke runs on a machine without the peers' venv
    psutil = None

PAGE = os.sysconf("SC_PAGE_SIZE")


def _proc_descendants(pid):
    """pid's descendants, from /proc/*/stat parent links (no psutil)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(d))
        except (OSError, ValueError):
            pass
    out, todo = [], list(children.get(pid, ()))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _proc_tree_rss(pid):
    """Summed RSS of pid and its descendants from /proc (no psutil)."""
    tot = 0
    for p in [pid] + _proc_descendants(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                tot += int(f.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            pass
    return tot


def tree_rss(p):
    if psutil is None:
        return _proc_tree_rss(p)
    try:
        procs = [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    tot = 0
    for q in procs:
        try:
            tot += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return tot


def kill_tree(proc):
    if psutil is not None:
        try:
            for q in psutil.Process(proc.pid).children(recursive=True):
                q.kill()
        except psutil.NoSuchProcess:
            pass
    else:
        for p in _proc_descendants(proc.pid):
            try:
                os.kill(p, 9)
            except OSError:
                pass
    proc.kill()


def run_once(cmd, timeout, cwd):
    load1 = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, text=True)
    except OSError as e:  # not installed / not built
        return dict(wall_s=0.0, peak_rss_mb=0.0, maxrss_main_mb=0.0, rc=127, timed_out=False,
                    load1=round(load1, 2), result=None, user_s=0.0, sys_s=0.0,
                    stderr_tail=f"cannot start {cmd[0]}: {e}")
    ps = psutil.Process(proc.pid) if psutil is not None else proc.pid
    peak = [0]
    done = threading.Event()

    def sampler():
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(ps))
            done.wait(0.05)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    out, err = [], []
    t_out = threading.Thread(target=lambda: out.append(proc.stdout.read()))
    t_err = threading.Thread(target=lambda: err.append(proc.stderr.read()))
    t_out.start(); t_err.start()
    timed_out = False
    try:
        _, status, ru = os.wait4(proc.pid, 0) if timeout is None else _wait_timeout(proc, timeout)
    except TimeoutError:
        timed_out = True
        kill_tree(proc)
        _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set(); th.join(); t_out.join(); t_err.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    self_ru = ru.ru_maxrss * 1024
    result = None
    bad_result = ""
    for line in (out[0] if out else "").splitlines():
        if line.startswith("RESULT "):
            try:
                result = json.loads(line[7:])
            except ValueError as e:
                bad_result = f"unparsable RESULT line ({e}): {line[:300]}\n"
    return dict(wall_s=round(wall, 3), peak_rss_mb=round(max(peak[0], self_ru) / 2**20, 1),
                maxrss_main_mb=round(self_ru / 2**20, 1), rc=proc.returncode,
                timed_out=timed_out, load1=round(load1, 2), result=result,
                user_s=round(ru.ru_utime, 2), sys_s=round(ru.ru_stime, 2),
                stderr_tail=(bad_result + (err[0][-2000:] if err else "")
                             if (proc.returncode or result is None) else ""))


def _wait_timeout(proc, timeout):
    deadline = time.perf_counter() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return pid, status, ru
        if time.perf_counter() > deadline:
            raise TimeoutError
        time.sleep(0.02)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.jsonl"))
    ap.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                    help="extra field copied into every record (repeatable)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    here = os.path.dirname(os.path.abspath(__file__))
    tags = dict(t.split("=", 1) for t in a.tag)
    for i in range(a.runs):
        r = run_once(cmd, a.timeout, here)
        rec = dict(name=a.name, dataset=a.dataset, run=i + 1, cmd=" ".join(cmd),
                   started=time.strftime("%Y-%m-%dT%H:%M:%S"), **tags, **r)
        with open(a.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        res = r["result"] or {}
        print(f"{a.name:>14} {a.dataset:>12} run {i + 1}: wall {r['wall_s']:8.2f} s  "
              f"peak {r['peak_rss_mb']:8.1f} MB  load1 {r['load1']:.2f}  rc {r['rc']}  "
              f"edges {res.get('edges')} checksum {res.get('checksum')}", flush=True)
        if r["rc"] != 0 or r["result"] is None:
            print(r["stderr_tail"], file=sys.stderr)
            break


if __name__ == "__main__":
    main()
