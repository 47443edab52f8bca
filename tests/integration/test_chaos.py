"""Faults on the primary while a client writes through HAProxy.

A writer commits one row at a time through port 3306 and records every commit the server
acknowledged (and which server it was). A checker samples every node's read_only over its
socket every few milliseconds. The primary's host is killed, partitioned away or paused, in
turn, CHAOS_FAULTS times (default 21); each time exactly one new primary must appear, and the
old node must come back as a replica (or report errant transactions, after which it is
re-provisioned as an operator would: emptied and restarted). At the end every acknowledged row
must be on the primary and on every replica, and no sample may show two writable nodes.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator

import pymysql
import pytest

from tests.integration.test_replication import ReadOnlyWatch, roles
from tests.testbed.bed import TestBed
from tests.testbed.cluster import (
    APP_DB,
    APP_PASSWORD,
    APP_USER,
    Node,
    boot_cluster,
    start_router,
    synced,
)
from tests.testbed.components import HAProxy
from tests.testbed.util import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FAULTS = int(os.environ.get("CHAOS_FAULTS", "21"))
T0 = time.monotonic()  # the timeline printed with faults and acknowledgements


class Writer(threading.Thread):
    def __init__(self, lb: HAProxy) -> None:
        super().__init__(daemon=True)
        self.lb = lb
        self.stop = threading.Event()
        self.acked: dict[int, str] = {}  # id -> "server GTID" that acknowledged it
        self.errors = 0
        self.next_id = 1

    def run(self) -> None:
        conn = None
        server = ""
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = pymysql.connect(host=self.lb.host.ip, port=3306, user=APP_USER,
                                           password=APP_PASSWORD, database=APP_DB,
                                           connect_timeout=2, read_timeout=5, write_timeout=5,
                                           autocommit=True)
                    with conn.cursor() as cur:
                        cur.execute("SELECT @@hostname")
                        server = cur.fetchone()[0]
                i = self.next_id
                self.next_id += 1  # an id is never retried: a failed commit may have landed
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO chaos VALUES (%s, %s)", (i, server))
                    self.acked[i] = server
                    # Which transaction it was, to find the fault a lost one straddled.
                    cur.execute("SELECT @@last_gtid")
                    self.acked[i] = f"{server} {cur.fetchone()[0]} " \
                                    f"t={time.monotonic() - T0:.2f}"
                time.sleep(0.005)  # a steady stream; unbounded volume only slows re-provisioning
            except (pymysql.MySQLError, OSError):
                self.errors += 1
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                conn = None
                time.sleep(0.05)


@pytest.fixture
def setup(bed: TestBed) -> Iterator[tuple[TestBed, list[Node], HAProxy]]:
    nodes = boot_cluster(bed, 3)
    lb = start_router(bed)
    p = next(n for n in nodes if n.http("/primary") == 200)
    with p.app() as c, c.cursor() as cur:
        cur.execute("CREATE TABLE chaos (id INT PRIMARY KEY, server VARCHAR(64)) ENGINE=InnoDB")
    yield bed, nodes, lb


def the_primary(nodes: list[Node], not_: Node | None = None, timeout: float = 60) -> Node:
    return wait_until(lambda: next((n for n in nodes if n is not not_ and n.host.running
                                    and not n.host.paused and n.http("/primary") == 200), None),
                      timeout=timeout, what="a primary")


def rejoin(node: Node) -> str:
    """Wait until the node replicates again, or re-provision it if it reports errant
    transactions (empty data directory, restart), as an operator would."""
    def state() -> str | None:
        if node.http("/replica") == 200:
            return "replica"
        try:
            if node.status()["errant"]:
                return "errant"
        except Exception:
            return None
        return None

    outcome = wait_until(state, timeout=90, what=f"{node.name} to rejoin or report errant")
    if outcome == "errant":
        node.host.stop()
        shutil.rmtree(node.datadir)
        node.host.restart()
        wait_until(lambda: node.http("/replica") == 200, timeout=240,
                   what=f"{node.name} to rejoin after re-provisioning (a full copy by replication)")
    return outcome


def test_acknowledged_writes_survive_faults_and_never_two_writable(
        setup: tuple[TestBed, list[Node], HAProxy]) -> None:
    bed, nodes, lb = setup
    writer = Writer(lb)
    writer.start()
    kinds = ["kill", "partition", "pause"]
    outcomes: list[str] = []
    resumed: list[tuple[str, float, float]] = []  # (node, from, to): see never_two_writable
    with ReadOnlyWatch(nodes) as watch:
        wait_until(lambda: len(writer.acked) > 20, timeout=30, what="the writer to commit")
        for i in range(FAULTS):
            kind = kinds[i % len(kinds)]
            old = the_primary(nodes)
            # The guarantee holds for a synchronous cluster: while the primary acknowledges
            # without a replica (just after a fault, until one catches up) it is marked
            # asynchronous and no node would take over from it (see ha._election).
            wait_until(lambda: synchronous(bed), timeout=60,
                       what="a replica to acknowledge commits again (the async key to go)")
            before = len(writer.acked)
            t0 = time.monotonic()
            print(f"t={t0 - T0:.2f} fault {i + 1}: {kind} {old.name}")
            if kind == "kill":
                old.host.kill()
            elif kind == "partition":
                bed.partition([old.host])
            else:
                old.host.pause()
            new = the_primary(nodes, not_=old)
            wait_until(lambda b=before: len(writer.acked) > b + 5, timeout=60,
                       what="writes to resume through HAProxy")
            took = time.monotonic() - t0
            if kind == "kill":
                old.host.restart()
            elif kind == "partition":
                bed.heal()
            else:
                t_resume = time.monotonic()
                old.host.resume()
                print(f"t={t_resume - T0:.2f} resumed {old.name}")
                resumed.append((old.name, t_resume, t_resume + 3.0))
                # Its supervisor's watchdog fences it within 3 s of SIGCONT.
                wait_until(lambda o=old: read_only(o), timeout=3,
                           what=f"{old.name} to fence itself after resuming")
            outcome = rejoin(old)
            for n in nodes:  # any other node made errant meanwhile is re-provisioned too
                if n is not old and n.http("/primary") != 200:
                    rejoin(n)
            outcomes.append(f"{kind} {old.name}->{new.name} {took:.1f}s {outcome}")
            print(f"fault {i + 1}/{FAULTS}: {outcomes[-1]}, {len(writer.acked)} acked, "
                  f"{writer.errors} errors")
        writer.stop.set()
        writer.join()
    assert watch.never_two_writable(resumed), "two nodes were writable at the same time"
    acked = set(writer.acked)
    final = the_primary(nodes)
    for n in nodes:
        try:
            wait_until(lambda n=n: acked <= ids_of(n), timeout=180,
                       what=f"every acknowledged row on {n.name}")
        except TimeoutError:
            for m in nodes:
                have = ids_of(m)
                lost = sorted(acked - have)
                by = sorted({writer.acked[i] for i in lost})[:10]
                print(f"{m.name}: {len(have)} rows, missing {len(lost)} acknowledged "
                      f"{lost[:5]}..{lost[-5:]} acknowledged by {by}; status "
                      f"{m.status()['last_decision']} gtid {m.status()['gtid_current_pos']}")
            raise
    assert roles(nodes).count("primary") == 1
    print(f"{len(acked)} acknowledged commits survived {FAULTS} faults; final primary "
          f"{final.name}; outcomes: {outcomes}")


def synchronous(bed: TestBed) -> bool:
    return synced(bed)


def read_only(node: Node) -> bool:
    with pymysql.connect(unix_socket=str(node.socket), user="root", connect_timeout=0.5,
                         read_timeout=0.5) as c, c.cursor() as cur:
        cur.execute("SELECT @@read_only")
        return bool(cur.fetchone()[0])


def ids_of(node: Node) -> set[int]:
    with node.app() as c, c.cursor() as cur:
        cur.execute("SELECT id FROM chaos")
        return {r[0] for r in cur.fetchall()}


