"""What the supervisor costs, next to what it supervises.

Boots one autopilot-mysql node on the namespace test bed (docker-compose.yml's environment: a
local Consul agent, a Consul server host), lets it settle as primary, then measures each process
of the host over an idle window: resident memory (VmRSS, and PSS where the kernel gives it) and
CPU time (utime+stime from /proc) as a share of one core. Prints one table with ratios to
mysqld, all from this one run. Never fails on a number.

    .venv/bin/python bench/supervisor.py [--idle 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.testbed.bed import TestBed  # noqa: E402
from tests.testbed.cluster import make_node  # noqa: E402
from tests.testbed.components import start_consul  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def role_of(pid: int, pid1: int) -> str:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    if pid == pid1:
        return "init shim (PID 1)"
    if b"supervise" in cmd:
        return "supervisor"
    if comm == "mariadbd":
        return "mysqld"
    if comm == "consul":
        return "consul agent"
    return comm


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def memory(pid: int) -> tuple[int, int | None]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    pss = None
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle measurement")
    ap.add_argument("--settle", type=float, default=10.0)
    args = ap.parse_args()
    with TestBed() as bed:
        chost = bed.add_host("consul")
        chost.boot()
        start_consul(chost)
        node = make_node(bed.add_host("db1"))
        t0 = time.monotonic()
        node.boot()
        node.wait_http("/primary", timeout=60)
        boot_s = time.monotonic() - t0
        time.sleep(args.settle)
        assert node.host.pid1 is not None
        pids = {p: role_of(p, node.host.pid1) for p in node.host.processes()}
        start = {p: cpu_ticks(p) for p in pids}
        w0 = time.monotonic()
        time.sleep(args.idle)
        wall = time.monotonic() - w0
        rows = []
        for pid, role in pids.items():
            try:
                cpu = (cpu_ticks(pid) - start[pid]) / TICK / wall * 100
                rss, pss = memory(pid)
            except OSError:
                continue
            rows.append((role, rss, pss, cpu))
    mysqld = next(r for r in rows if r[0] == "mysqld")
    ours = [r for r in rows if r[0] in ("init shim (PID 1)", "supervisor")]
    total = ("init shim + supervisor", sum(r[1] for r in ours),
             sum(r[2] or 0 for r in ours) or None, sum(r[3] for r in ours))
    print(f"\nautopilot-mysql supervisor cost, one node, idle primary, {wall:.0f}s window "
          f"(booted to primary in {boot_s:.1f}s)\n")
    print(f"{'process':<24} {'RSS MiB':>8} {'PSS MiB':>8} {'CPU % core':>10} "
          f"{'RSS / mysqld':>13} {'CPU / mysqld':>13}")
    for role, rss, pss, cpu in sorted(rows, key=lambda r: -r[1]) + [total]:
        pss_txt = f"{pss / 2**20:8.1f}" if pss else f"{'-':>8}"
        cpu_ratio = f"{cpu / mysqld[3]:13.2f}" if mysqld[3] > 0 else f"{'-':>13}"
        print(f"{role:<24} {rss / 2**20:8.1f} {pss_txt} {cpu:10.2f} "
              f"{rss / mysqld[1]:13.2f} {cpu_ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
