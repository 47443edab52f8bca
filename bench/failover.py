"""Failover timings of autopilot-mysql on the namespace test bed, one table, one run.

Each round boots a fresh three-node cluster (docker-compose.yml's environment) with HAProxy in
front (etc/haproxy.cfg) and a client writing through it every 5 ms, then measures:
- bootstrap: from starting Consul and three empty nodes to one primary and two replicas;
- switchover: the pause with no writable node (every node's read_only sampled every few ms),
  and the longest gap between acknowledged writes as the client through HAProxy sees it;
- mysqld crash: kill -9 of mysqld alone on the primary, to the first write acknowledged by a
  primary (tried on every node directly), and the client's gap through HAProxy;
- cut from Consul: the primary cut off from the Consul server only (it still reaches its
  replicas and HAProxy): the client's gap through HAProxy;
- Consul outage: the Consul server down for 30 s: writes the client had acknowledged meanwhile
  (FAILSAFE on, the default), and the longest gap;
- node silent: the primary's host goes silent (its link down, as a dead switch port or a hung
  VM: no reset, nothing refused), to the first write on a new primary, and the client's gap;
  the silent host is then killed and booted again on its data, and rejoins;
- node loss: SIGKILL of the primary's whole host, to the first write on a new primary (tried on
  every node directly), and the client's gap through HAProxy.
Ratios are to the safety issue's targets and to Patroni's tuned figures measured on this
machine (10.1 s node loss, 3.1 s crash, 1.4 s switchover). Never fails on a number.

    .venv/bin/python bench/failover.py [--rounds 5] [--outage 30]
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
from tests.testbed.cluster import (  # noqa: E402
    Node,
    boot_cluster,
    healthy_cluster,
    start_router,
    synced,
)
from tests.testbed.components import start_consul  # noqa: E402
from tests.testbed.util import wait_until  # noqa: E402
from tests.testbed.workload import Writer, create_table  # noqa: E402

TARGETS = {"node loss": 5.0, "node loss (client)": 5.0, "mysqld crash": 2.0,
           "switchover pause": 0.5, "switchover (client)": 0.5, "cut from Consul (client)": 5.0}
PATRONI = {"node loss": 10.1, "mysqld crash": 3.1, "switchover pause": 1.4}
# orchestrator 3.2.6 tuned (InstancePollSeconds=1, semi-sync), measured on this machine, and
# the performance issue's targets (at least as fast as it, and safe)
ORCHESTRATOR = {"node loss": 2.31, "node silent": 8.86, "mysqld crash": 2.51,
                "switchover pause": 0.075}
FAST = {"node loss": 2.0, "node silent": 4.0, "mysqld crash": 1.5, "switchover pause": 0.07,
        "switchover (client)": 0.3, "bootstrap (3 nodes)": 8.0}


def first_write(nodes: list[Node], t0: float, timeout: float = 60) -> float:
    """Seconds from t0 until any node acknowledges an INSERT."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in nodes:
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


def settle(bed: TestBed, nodes: list[Node], writer: Writer) -> None:
    # Every node reaching Consul first, then the set: after the outage, a primary whose agent
    # came back after a replica's had its lease run out (the replica, reaching Consul, no
    # longer confirms a failsafe), fenced, and opened again a moment later under a new term,
    # not yet synced. A set read before that write still said synced; the next fault then
    # found no election possible without the isolated primary's position (a round that
    # waited 60 s for a write, 2026-12-08).
    wait_until(lambda: all(n.status().get("consul_ok") for n in nodes)
               and healthy_cluster(nodes) and synced(bed), timeout=120,
               what="every node reaching Consul, one primary, replicas, a synced "
                    "acknowledgement set")
    n = len(writer.acked)
    wait_until(lambda: len(writer.acked) > n + 20, timeout=60, what="the client to write")


def client_gap(writer: Writer, t0: float, resumed_on: str | None = None,
               timeout: float = 60) -> float:
    """The client's longest gap from t0 until its writes flow again (on `resumed_on`)."""
    def flowing() -> bool:
        after = [a for a in writer.acked.values() if a.at > t0
                 and (resumed_on is None or a.server == resumed_on)]
        return len(after) > 10
    wait_until(flowing, timeout=timeout, what="the client's writes to flow again")
    return writer.longest_gap(t0, time.monotonic())


def one_round(outage: float) -> dict[str, float]:
    out: dict[str, float] = {}
    with TestBed() as bed:
        t0 = time.monotonic()
        nodes = boot_cluster(bed, 3, timeout=120)  # includes the Consul server's start
        out["bootstrap (3 nodes)"] = time.monotonic() - t0
        lb = start_router(bed)
        p = next(n for n in nodes if n.http("/primary") == 200)
        create_table(p)
        with p.app() as c, c.cursor() as cur:
            cur.execute("CREATE TABLE bench (id INT AUTO_INCREMENT PRIMARY KEY, node TEXT)")
        writer = Writer(lb.host.ip)
        writer.start()
        settle(bed, nodes, writer)

        target = next(n for n in nodes if n is not p)
        t0 = time.monotonic()
        with ReadOnlyWatch(nodes) as watch:
            switchover(p, target.name)
            wait_until(lambda: target.http("/primary") == 200, timeout=30, what="switchover")
        out["switchover pause"] = watch.longest_gap()
        out["switchover (client)"] = client_gap(writer, t0, target.name)
        settle(bed, nodes, writer)

        p = next(n for n in nodes if n.http("/primary") == 200)
        pid = p.mysqld_pid()
        assert pid is not None
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        out["mysqld crash"] = first_write(nodes, t0)
        out["mysqld crash (client)"] = client_gap(writer, t0)
        settle(bed, nodes, writer)

        p = next(n for n in nodes if n.http("/primary") == 200)
        t0 = time.monotonic()
        rules = bed.partition([p.host], [bed.hosts["consul"]])
        new = wait_until(lambda: next((n for n in nodes if n is not p
                                       and n.http("/primary") == 200), None),
                         timeout=60, what="a new primary")
        out["cut from Consul (client)"] = client_gap(writer, t0, new.name)
        bed.heal(rules)
        settle(bed, nodes, writer)

        chost = bed.hosts["consul"]
        for proc in chost._spawned:
            if proc.poll() is None:
                chost.kill_spawned(proc)
        t0 = time.monotonic()
        time.sleep(outage)
        t1 = time.monotonic()
        out[f"writes in a {outage:.0f}s Consul outage"] = float(
            sum(1 for a in writer.acked.values() if t0 <= a.at <= t1))
        out["Consul outage gap (client)"] = writer.longest_gap(t0, t1)
        start_consul(chost)
        settle(bed, nodes, writer)

        p = next(n for n in nodes if n.http("/primary") == 200)
        rest = [n for n in nodes if n is not p]
        t0 = time.monotonic()
        bed.isolate(p.host)
        out["node silent"] = first_write(rest, t0)
        new = wait_until(lambda: next((n for n in rest if n.http("/primary") == 200), None),
                         timeout=60, what="a new primary")
        out["node silent (client)"] = client_gap(writer, t0, new.name)
        p.host.kill()
        bed.heal()
        p.host.restart(graceful=False)  # booted again on its data: it rejoins as a replica
        settle(bed, nodes, writer)

        p = next(n for n in nodes if n.http("/primary") == 200)
        rest = [n for n in nodes if n is not p]
        t0 = time.monotonic()
        p.host.kill()
        out["node loss"] = first_write(rest, t0)
        new = wait_until(lambda: next((n for n in rest if n.http("/primary") == 200), None),
                         timeout=60, what="a new primary")
        out["node loss (client)"] = client_gap(writer, t0, new.name)
        writer.halt()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--outage", type=float, default=30.0)
    args = ap.parse_args()
    results: dict[str, list[float]] = {}
    for i in range(args.rounds):
        r = one_round(args.outage)
        print(f"round {i + 1}/{args.rounds}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()),
              flush=True)
        for k, v in r.items():
            results.setdefault(k, []).append(v)
    print(f"\nautopilot-mysql failover, {args.rounds} rounds, three nodes and HAProxy on the "
          "namespace test bed (2 cores); seconds unless it says writes\n")
    def ratio(med: float, ref: float | None) -> str:
        return f"{ref:7.3g} {med / ref:6.2f}" if ref else f"{'-':>7} {'-':>6}"
    print(f"{'measure':<30} {'median':>7} {'min':>7} {'max':>7} {'target':>7} {'ratio':>6} "
          f"{'fast':>7} {'ratio':>6} {'orch.':>7} {'ratio':>6} {'Patroni':>7} {'ratio':>6}")
    for k, vals in results.items():
        med = statistics.median(vals)
        print(f"{k:<30} {med:7.2f} {min(vals):7.2f} {max(vals):7.2f} "
              f"{ratio(med, TARGETS.get(k))} {ratio(med, FAST.get(k))} "
              f"{ratio(med, ORCHESTRATOR.get(k))} {ratio(med, PATRONI.get(k))}")
    print("\ntarget: the safety issue's; fast: the performance issue's; orch.: orchestrator "
          "3.2.6 tuned; ratio: median / that figure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
