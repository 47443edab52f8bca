"""What the supervisor costs, next to what it supervises.

Boots one autopilot-mysql node on the namespace test bed (docker-compose.yml's environment: a
local Consul agent, a Consul server host), lets it settle as primary, then measures each process
of the host over an idle window: resident memory (VmRSS, and PSS where the kernel gives it) and
CPU time (utime+stime from /proc) as a share of one core. Prints one table with ratios to
mysqld, all from this one run; then the same with a second node as its replica (the cost of
every other node of a cluster). Prints the ratios to the figures before this work and to
the performance issue's targets. Never fails on a number.

    .venv/bin/python bench/supervisor.py [--idle 90]
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
from tests.testbed.host import Host  # noqa: E402

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


# The figures the performance issue started from (bench/supervisor.py on this machine, before
# the lean shim, the http.client transport and the event-driven idle loop), and its targets.
BEFORE = {"supervisor CPU %": 1.30, "shim + supervisor RSS MiB": 67.8, "shim RSS MiB": 23.0}
TARGET = {"supervisor CPU %": 0.3, "shim + supervisor RSS MiB": 40.0, "shim RSS MiB": 10.0}

Row = tuple[str, int, int | None, float]  # (process, RSS, PSS, CPU % of a core)


def measure(hosts: list[Host], idle: float) -> dict[str, list[Row]]:
    """Every process of each host over one idle window: host name -> rows."""
    pids: dict[str, dict[int, str]] = {}
    for h in hosts:
        assert h.pid1 is not None
        pids[h.name] = {p: role_of(p, h.pid1) for p in h.processes()}
    start = {p: cpu_ticks(p) for roles in pids.values() for p in roles}
    w0 = time.monotonic()
    time.sleep(idle)
    wall = time.monotonic() - w0
    out: dict[str, list[Row]] = {}
    for name, roles in pids.items():
        rows = []
        for pid, role in roles.items():
            try:
                cpu = (cpu_ticks(pid) - start[pid]) / TICK / wall * 100
                rss, pss = memory(pid)
            except OSError:
                continue
            rows.append((role, rss, pss, cpu))
        out[name] = rows
    return out


def table(title: str, rows: list[Row]) -> dict[str, float]:
    mysqld = next(r for r in rows if r[0] == "mysqld")
    ours = [r for r in rows if r[0] in ("init shim (PID 1)", "supervisor")]
    total: Row = ("init shim + supervisor", sum(r[1] for r in ours),
                  sum(r[2] or 0 for r in ours) or None, sum(r[3] for r in ours))
    print(f"\n{title}\n")
    print(f"{'process':<24} {'RSS MiB':>8} {'PSS MiB':>8} {'CPU % core':>10} "
          f"{'RSS / mysqld':>13} {'CPU / mysqld':>13}")
    for role, rss, pss, cpu in sorted(rows, key=lambda r: -r[1]) + [total]:
        pss_txt = f"{pss / 2**20:8.1f}" if pss else f"{'-':>8}"
        cpu_ratio = f"{cpu / mysqld[3]:13.2f}" if mysqld[3] > 0 else f"{'-':>13}"
        print(f"{role:<24} {rss / 2**20:8.1f} {pss_txt} {cpu:10.2f} "
              f"{rss / mysqld[1]:13.2f} {cpu_ratio}")
    shim = next((r for r in rows if r[0] == "init shim (PID 1)"), None)
    sup = next((r for r in rows if r[0] == "supervisor"), None)
    return {"supervisor CPU %": sup[3] if sup else 0.0,
            "shim + supervisor RSS MiB": total[1] / 2**20,
            "shim RSS MiB": shim[1] / 2**20 if shim else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=90.0,
                    help="seconds of idle measurement (CPU time counts in ticks of 0.01 s: a "
                    "step of 0.03 %% over 30 s, 0.01 %% over 90 s)")
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
        alone = measure([node.host], args.idle)["db1"]
        # and with a replica: the primary then keeps an acknowledgement set and polls its
        # status; the replica follows, and is what most nodes of a cluster are
        second = make_node(bed.add_host("db2"))
        second.boot()
        second.wait_http("/replica", timeout=90)
        time.sleep(args.settle)
        pair = measure([node.host, second.host], args.idle)
    figures = table(f"autopilot-mysql supervisor cost, one node, idle primary, {args.idle:.0f}s "
                    f"window (booted to primary in {boot_s:.1f}s)", alone)
    table("the same primary with one replica", pair["db1"])
    replica = table("that replica", pair["db2"])
    print(f"\n{'figure (idle primary alone)':<28} {'before':>8} {'now':>8} {'now/before':>11} "
          f"{'target':>8} {'now/target':>11}")
    for k, now in figures.items():
        print(f"{k:<28} {BEFORE[k]:8.2f} {now:8.2f} {now / BEFORE[k]:11.2f} {TARGET[k]:8.2f} "
              f"{now / TARGET[k]:11.2f}")
    print(f"{'replica: supervisor CPU %':<28} {'':>8} {replica['supervisor CPU %']:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
