"""Galera timings of autopilot-mysql (TOPOLOGY=galera) on the namespace test bed, one table,
one run.

Each round boots a fresh three-node Galera cluster (docker-compose.yml's environment with
TOPOLOGY=galera) with HAProxy in front (etc/haproxy.cfg) and a client writing through it every
5 ms, then measures:
- bootstrap: from starting Consul and three empty nodes to one writer and two Synced readers
  (one bootstrap, two joins by mariabackup SST, one at a time);
- writer failover: SIGKILL of the writer's whole host (its kernel refuses connections to its
  Galera port: evicted at once, galera.G11), the client's longest gap through HAProxy until
  its writes flow on the new writer;
- writer failover, host silent: the writer's host paused (SIGSTOP, as a host gone silent:
  Galera's evs.suspect_timeout decides), the same gap;
- join by IST: the killed host restarted, until it is a Synced reader again;
- join by SST: a new empty node, until it is a Synced reader;
- join from a snapshot: a new empty node of a cluster whose schedule took a snapshot on a
  reader (MinIO on the bed), until it is a Synced reader: restore, then IST from there;
- coordinated crash: SIGKILL of every host at once, all restarted: until one writer and Synced
  readers (census, bootstrap of the most advanced, the others by IST), and until the client's
  first write through HAProxy.
Ratios are to the hand-run recovery in ../shared/MARIADB-NOTES.md (recover + bootstrap +
2 IST: 6-9 s, taken as 7.5) and to mariadb-operator's 30 s wait before it even starts a
recovery (clusterHealthyTimeout). Never fails on a number.

    .venv/bin/python bench/galera.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.testbed.bed import TestBed  # noqa: E402
from tests.testbed.cluster import (  # noqa: E402
    boot_cluster,
    healthy_cluster,
    make_node,
    s3_env,
    start_router,
)
from tests.testbed.components import start_minio  # noqa: E402
from tests.testbed.util import wait_until  # noqa: E402
from tests.testbed.workload import Writer, create_table  # noqa: E402

HAND_RUN = {"coordinated crash: cluster back": 7.5}
OPERATOR_WAIT = 30.0  # mariadb-operator waits this long before it starts a recovery
TARGETS = {"writer failover (client)": 2.0, "writer failover, host silent (client)": 2.0}


def flowing_again(writer: Writer, t0: float, on: str | None = None, timeout: float = 120
                  ) -> float:
    def flowing() -> bool:
        return sum(1 for a in writer.acked.values()
                   if a.at > t0 and (on is None or a.server == on)) > 10
    wait_until(flowing, timeout=timeout, what="the client's writes to flow again")
    first = min(a.at for a in writer.acked.values() if a.at > t0 and (on is None
                                                                       or a.server == on))
    return first - t0


def one_round() -> dict[str, float]:
    out: dict[str, float] = {}
    with TestBed() as bed:
        sh = bed.add_host("s3")
        sh.boot()
        env = s3_env(start_minio(sh), SNAPSHOT_INTERVAL="0")  # the first one, at once
        t0 = time.monotonic()
        nodes = boot_cluster(bed, 3, timeout=240, TOPOLOGY="galera", **env)
        out["bootstrap (3 nodes, 2 SST)"] = time.monotonic() - t0
        lb = start_router(bed)
        w = next(n for n in nodes if n.http("/primary") == 200)
        create_table(w)
        writer = Writer(lb.host.ip)
        writer.start()
        wait_until(lambda: len(writer.acked) > 50, timeout=60, what="writes through HAProxy")

        rest = [n for n in nodes if n is not w]
        t0 = time.monotonic()
        w.host.kill()
        new = wait_until(lambda: next((n for n in rest if n.http("/primary") == 200), None),
                         timeout=60, what="a new writer")
        flowing_again(writer, t0, new.name)
        out["writer failover (client)"] = writer.longest_gap(t0, time.monotonic())

        t0 = time.monotonic()
        w.host.restart(graceful=False)
        wait_until(lambda: healthy_cluster(nodes), timeout=120, what="the old writer back")
        out["join by IST (restarted node)"] = time.monotonic() - t0

        w = next(n for n in nodes if n.http("/primary") == 200)
        rest = [n for n in nodes if n is not w]
        t0 = time.monotonic()
        w.host.pause()  # silent: no refusal proves its mysqld gone (G11 cannot evict)
        new = wait_until(lambda: next((n for n in rest if n.http("/primary") == 200), None),
                         timeout=60, what="a new writer")
        flowing_again(writer, t0, new.name)
        out["writer failover, host silent (client)"] = writer.longest_gap(t0, time.monotonic())
        w.host.resume()
        wait_until(lambda: healthy_cluster(nodes), timeout=120, what="the paused writer back")

        t0 = time.monotonic()
        extra = make_node(bed.add_host("db4"), TOPOLOGY="galera")  # no S3_BUCKET: SST
        extra.boot()
        everyone = [*nodes, extra]
        wait_until(lambda: healthy_cluster(everyone), timeout=180, what="db4 Synced")
        out["join by SST (new empty node)"] = time.monotonic() - t0
        extra.host.stop()
        wait_until(lambda: healthy_cluster(nodes), timeout=60, what="three nodes again")

        wait_until(lambda: any(re.search(r"snapshot \S+ done in", n.log.read_text())
                               for n in nodes),
                   timeout=180, what="the schedule's first snapshot")
        t0 = time.monotonic()
        extra = make_node(bed.add_host("db5"), TOPOLOGY="galera", **env)
        extra.boot()
        everyone = [*nodes, extra]
        wait_until(lambda: healthy_cluster(everyone), timeout=180, what="db5 Synced")
        out["join from a snapshot (restore + IST)"] = time.monotonic() - t0
        if "IST received" not in extra.log.read_text():
            print("note: db5 did not join by IST", flush=True)
        extra.host.stop()
        wait_until(lambda: healthy_cluster(nodes), timeout=60, what="three nodes again")

        for n in nodes:
            n.host.kill()
        t0 = time.monotonic()
        for n in nodes:
            n.host.restart(graceful=False)
        wait_until(lambda: healthy_cluster(nodes), timeout=240, what="the cluster back")
        out["coordinated crash: cluster back"] = time.monotonic() - t0
        out["coordinated crash: first write (client)"] = flowing_again(writer, t0)
        writer.halt()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    results: dict[str, list[float]] = {}
    for i in range(args.rounds):
        r = one_round()
        print(f"round {i + 1}/{args.rounds}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()),
              flush=True)
        for k, v in r.items():
            results.setdefault(k, []).append(v)
    print(f"\nautopilot-mysql TOPOLOGY=galera, {args.rounds} rounds, three nodes and HAProxy on "
          "the namespace test bed (2 cores); seconds\n")
    print(f"{'measure':<40} {'median':>7} {'min':>7} {'max':>7} {'target':>7} "
          f"{'/target':>8} {'hand-run':>9} {'/hand':>6} {'/MO 30s':>8}")
    dash = "-"
    for k, vals in results.items():
        med = statistics.median(vals)
        tgt, hand = TARGETS.get(k), HAND_RUN.get(k)
        mo = f"{med / OPERATOR_WAIT:8.2f}" if k.startswith("coordinated") else f"{dash:>8}"
        print(f"{k:<40} {med:7.2f} {min(vals):7.2f} {max(vals):7.2f} "
              f"{(f'{tgt:7.1f}' if tgt else f'{dash:>7}')} "
              f"{(f'{med / tgt:8.2f}' if tgt else f'{dash:>8}')} "
              f"{(f'{hand:9.1f}' if hand else f'{dash:>9}')} "
              f"{(f'{med / hand:6.2f}' if hand else f'{dash:>6}')} {mo}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
