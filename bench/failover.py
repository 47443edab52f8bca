"""Failover timings of autopilot-mysql on the namespace test bed, one table, one run.

Each round boots a fresh three-node cluster (docker-compose.yml's environment) and measures:
- bootstrap: from starting Consul and three empty nodes to one primary and two replicating
  replicas;
- switchover: the write pause (no node writable) of `autopilot-mysql switchover`, sampled from
  every node's read_only every few ms;
- mysqld crash: kill -9 of mysqld alone on the primary, to the first write acknowledged by a
  primary (the same node restarted, or a new one);
- node loss: SIGKILL of the primary's whole host, to the first write acknowledged by a new
  primary.
Writes are tried every 10 ms on every node directly (as the application user), so HAProxy's
check interval is not part of the figure. Ratios are to the targets of issue 4 and to
Patroni's tuned figures measured on this machine (10.1 s node loss, 3.1 s crash, 1.3 s
switchover). Never fails on a number.

    .venv/bin/python bench/failover.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.test_replication import ReadOnlyWatch, switchover  # noqa: E402
from tests.testbed.bed import TestBed  # noqa: E402
from tests.testbed.cluster import Node, boot_cluster, healthy_cluster  # noqa: E402
from tests.testbed.util import wait_until  # noqa: E402

TARGETS = {"node loss": 5.0, "mysqld crash": 2.0, "switchover pause": 0.5}
PATRONI = {"node loss": 10.1, "mysqld crash": 3.1, "switchover pause": 1.3}


def first_write(nodes: list[Node], t0: float, timeout: float = 60) -> float:
    """Seconds from t0 until any node acknowledges an INSERT."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        for node in nodes:
            n += 1
            try:
                with pymysql.connect(host=node.host.ip, port=3306, user="app",
                                     password="app-secret", database="app", connect_timeout=0.2,
                                     read_timeout=2, autocommit=True) as c, c.cursor() as cur:
                    cur.execute("INSERT INTO bench VALUES (NULL, %s)", (node.name,))
                    return time.monotonic() - t0
            except pymysql.MySQLError:
                continue
        time.sleep(0.01)
    raise TimeoutError("no write accepted")


def one_round() -> dict[str, float]:
    out: dict[str, float] = {}
    with TestBed() as bed:
        t0 = time.monotonic()
        nodes = boot_cluster(bed, 3, timeout=120)  # includes the Consul server's start
        out["bootstrap (3 nodes)"] = time.monotonic() - t0
        p = next(n for n in nodes if n.http("/primary") == 200)
        with p.app() as c, c.cursor() as cur:
            cur.execute("CREATE TABLE bench (id INT AUTO_INCREMENT PRIMARY KEY, node TEXT)")
        wait_until(lambda: healthy_cluster(nodes), timeout=60, what="replicas with the table")

        target = next(n for n in nodes if n is not p)
        with ReadOnlyWatch(nodes) as watch:
            switchover(p, target.name)
            wait_until(lambda: target.http("/primary") == 200, timeout=30, what="switchover")
        out["switchover pause"] = watch.longest_gap()
        wait_until(lambda: healthy_cluster(nodes), timeout=60, what="healthy after switchover")

        p = next(n for n in nodes if n.http("/primary") == 200)
        pid = p.mysqld_pid()
        assert pid is not None
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        out["mysqld crash"] = first_write(nodes, t0)
        wait_until(lambda: healthy_cluster(nodes) or any(n.status()["errant"] for n in nodes),
                   timeout=90, what="settled after the crash")

        p = next(n for n in nodes if n.http("/primary") == 200)
        rest = [n for n in nodes if n is not p]
        t0 = time.monotonic()
        p.host.kill()
        out["node loss"] = first_write(rest, t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    results: dict[str, list[float]] = {}
    for i in range(args.rounds):
        r = one_round()
        print(f"round {i + 1}/{args.rounds}: " + ", ".join(f"{k} {v:.2f}s" for k, v in r.items()),
              flush=True)
        for k, v in r.items():
            results.setdefault(k, []).append(v)
    print(f"\nautopilot-mysql failover, {args.rounds} rounds, three nodes on the namespace "
          "test bed (2 cores)\n")
    print(f"{'measure':<22} {'median s':>9} {'min s':>7} {'max s':>7} {'target s':>9} "
          f"{'median/target':>14} {'Patroni tuned s':>16} {'median/Patroni':>15}")
    for k, vals in results.items():
        med = statistics.median(vals)
        tgt, pat = TARGETS.get(k), PATRONI.get(k)
        print(f"{k:<22} {med:9.2f} {min(vals):7.2f} {max(vals):7.2f} "
              f"{(f'{tgt:9.1f}' if tgt else f'{chr(45):>9}')} "
              f"{(f'{med / tgt:14.2f}' if tgt else f'{chr(45):>14}')} "
              f"{(f'{pat:16.1f}' if pat else f'{chr(45):>16}')} "
              f"{(f'{med / pat:15.2f}' if pat else f'{chr(45):>15}')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
