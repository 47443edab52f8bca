"""GTID replication, election and failover with three real nodes (docker-compose.yml's
environment), a real Consul and MariaDB.

Bound stated: three nodes from nothing to one primary and two replicating replicas within 90 s
(about 15 s measured on 2 cores)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import requests
import yaml

from tests.testbed.bed import TestBed
from tests.testbed.cluster import (
    API_TOKEN,
    VENV_BIN,
    Node,
    boot_cluster,
    make_node,
    sync_key,
    synced,
)
from tests.testbed.util import wait_until

pytestmark = pytest.mark.integration
BOOT_BOUND = 90.0


@pytest.fixture
def cluster(bed: TestBed) -> Iterator[list[Node]]:
    t0 = time.monotonic()
    nodes = boot_cluster(bed, 3, timeout=BOOT_BOUND)
    print(f"three nodes: one primary, two replicas in {time.monotonic() - t0:.1f}s")
    yield nodes


def roles(nodes: list[Node]) -> list[str]:
    """primary / replica as the role endpoints say (a replica must really replicate)."""
    out = []
    for n in nodes:
        if not n.host.running or n.host.paused:
            out.append("down")
        elif n.http("/primary") == 200:
            out.append("primary")
        elif n.http("/replica") == 200:
            out.append("replica")
        else:
            out.append("none")
    return out


def primary(nodes: list[Node]) -> Node:
    return wait_until(lambda: next((n for n in nodes if n.host.running and not n.host.paused
                                    and n.http("/primary") == 200), None),
                      timeout=60, what="a primary")


def insert(node: Node, first: int, count: int) -> list[int]:
    """Insert rows one commit each; return the ids whose commit was acknowledged."""
    acked = []
    with node.app() as c, c.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY, at DOUBLE) ENGINE=InnoDB")
        for i in range(first, first + count):
            cur.execute("INSERT INTO t VALUES (%s, %s)", (i, time.time()))
            acked.append(i)
    return acked


def ids(node: Node) -> set[int]:
    with node.app() as c, c.cursor() as cur:
        cur.execute("SELECT id FROM t")
        return {r[0] for r in cur.fetchall()}


def has_rows(node: Node, want: set[int]) -> bool:
    try:
        return want <= ids(node)
    except pymysql.MySQLError:
        return False


def test_bootstrap_replicates_and_replicas_are_read_only(cluster: list[Node]) -> None:
    p = primary(cluster)
    acked = set(insert(p, 1, 50))
    for n in cluster:
        wait_until(lambda n=n: has_rows(n, acked), timeout=30, what=f"rows on {n.name}")
    replica = next(n for n in cluster if n is not p)
    with pytest.raises(pymysql.MySQLError, match="read-only"):
        insert(replica, 1000, 1)
    # A replica restarts its IO thread once when the primary admits it to the acknowledgement
    # set (semi-sync on), so "replicating" is a state it reaches, not one it never leaves.
    st = wait_until(lambda: (s := replica.status())["replicating"] and s["lag"] == 0 and s,
                    timeout=30, what=f"{replica.name} replicating, 0s behind")
    assert st["leader"] == p.name


def test_primary_host_killed_fails_over_without_losing_acknowledged_rows(
        bed: TestBed, cluster: list[Node]) -> None:
    old = primary(cluster)
    acked = set(insert(old, 1, 200))
    t0 = time.monotonic()
    old.host.kill()
    rest = [n for n in cluster if n is not old]
    new = primary(rest)
    wait_until(lambda: has_rows(new, acked), timeout=5, what="every acknowledged row")
    took = time.monotonic() - t0
    acked |= set(insert(new, 1000, 10))  # the first write on the new primary
    print(f"node loss to a writable new primary: {took:.1f}s")
    other = next(n for n in rest if n is not new)
    wait_until(lambda: has_rows(other, acked), timeout=30, what="rows on the other replica")
    wait_until(lambda: roles(rest).count("replica") == 1, timeout=30,
               what="the other replica to follow the new primary")
    # The old primary comes back on its data directory as a replica of the new one.
    old.host.restart()
    wait_until(lambda: old.http("/replica") == 200, timeout=60,
               what="the old primary to rejoin as a replica")
    wait_until(lambda: has_rows(old, acked), timeout=30, what="rows on the rejoined node")
    assert roles(cluster).count("primary") == 1


def test_partitioned_primary_fences_and_an_errant_node_is_rebuilt_from_a_copy(
        bed: TestBed, cluster: list[Node]) -> None:
    old = primary(cluster)
    acked = set(insert(old, 1, 20))
    rest = [n for n in cluster if n is not old]
    for n in rest:
        wait_until(lambda n=n: has_rows(n, acked), timeout=30, what="replicated rows")
    bed.partition([old.host])  # from every other host; the harness still sees it
    new = primary(rest)
    # The old primary fenced itself: no client can write there any more ...
    wait_until(lambda: old.status()["writable"] is False, timeout=15,
               what="the partitioned primary to fence itself")
    with pytest.raises(pymysql.MySQLError, match="read-only"):
        insert(old, 500, 1)
    # ... but root over the local socket bypasses read_only (READ ONLY ADMIN): a transaction
    # the new primary never sees, as a split-brain write would be.
    with old.root() as c, c.cursor() as cur:
        cur.execute("INSERT INTO app.t VALUES (777, 0)")
        cur.execute("SELECT @@gtid_binlog_pos")
        errant_gtid = cur.fetchone()[0]
    acked |= set(insert(new, 1000, 5))
    # Stopped while it is cut off (cleanly: a power cut would let its recovery drop that
    # unacknowledged commit, election.I8), it comes back with re-provisioning off (this
    # node only), so that it stays errant for the next step.
    old.host.stop()
    old.env["REPROVISION"] = "false"
    bed.heal()
    size = old.log.stat().st_size
    old.boot()
    # It is named errant (the exact GTID logged) ...
    errant_seq = errant_gtid.split(",")[-1]
    wait_until(lambda: errant_seq in old.log.read_bytes()[size:].decode(),
               timeout=60, what="the old primary to name its errant transaction")
    wait_until(lambda: bool(old.status()["errant"]), timeout=10, what="status: errant")
    # ... and a restart does not make it forget (nemesis seed 326437764: it took part in
    # the next election, joined the winner's acknowledgement set, and its re-provisioning
    # then blocked every election after). From its first cycle it is errant, out of
    # replication, and says why.
    old.host.kill()
    size = old.log.stat().st_size
    old.boot()
    wait_until(lambda: "state file records transactions a primary refused as errant"
               in old.log.read_bytes()[size:].decode(), timeout=60,
               what="the restarted node to remember it is errant")
    st = wait_until(lambda: (lambda s: s if "never had" in s["last_decision"] else None)(
        old.status()), timeout=60, what="the restarted node's first cycle as errant")
    assert errant_seq in ",".join(st["errant"]), st
    assert not st["replicating"] and not st["healthy"] and old.http("/replica") != 200
    assert "replication pointed at" not in old.log.read_bytes()[size:].decode()
    # With re-provisioning on again (as by default) and no snapshot configured, it is rebuilt
    # from a copy of a live node, and it rejoins without the errant row: no manual step.
    old.host.kill()
    old.env["REPROVISION"] = "true"
    size = old.log.stat().st_size
    old.boot()
    assert roles(cluster).count("primary") == 1
    wait_until(lambda: old.http("/replica") == 200, timeout=120,
               what="the errant node to be re-provisioned from a copy and replicate again")
    log = old.log.read_bytes()[size:].decode()
    assert "re-provisioned from a copy of" in log, log[-2000:]
    assert not old.status()["errant"]
    assert 777 not in ids(new) and 777 not in ids(old)
    for n in cluster:
        wait_until(lambda n=n: has_rows(n, acked), timeout=30, what=f"every row on {n.name}")


class ReadOnlyWatch:
    """Polls every node's read_only over its socket (as root) every few ms, recording when
    each was writable; fails if two nodes are ever writable in the same sample.

    The nodes are read one after another, so one pass is no instant: a pass slowed down (a
    busy machine: CI ran two tests at once) can read the old primary before it fences and
    the new one after it opens, two writable nodes that never were. So each sample reads
    the nodes in order, then in reverse order, and counts a node writable only when both
    of its reads say so. It then was writable throughout between its two reads (read_only
    does not flap), and these spans nest (A B C C B A): every two nodes counted in a sample
    were writable at the same time, during the inner one's span. Two nodes writable
    together for less than a sample can go unseen; the acknowledged-rows checks remain.
    `seen` keeps, per sample, every node that either read found writable."""

    def __init__(self, nodes: list[Node]) -> None:
        import threading
        self.nodes = nodes
        self.samples: list[tuple[float, tuple[str, ...]]] = []
        self.seen: list[tuple[float, tuple[str, ...]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conns: dict[str, pymysql.Connection | None] = {n.name: None for n in self.nodes}
        sockets = {n.name: str(n.socket) for n in self.nodes}
        retry_at = {n.name: 0.0 for n in self.nodes}

        def writable(name: str) -> bool:
            if time.monotonic() < retry_at[name]:
                return False  # frozen or gone a moment ago: do not stall the others on it
            try:
                c = conns[name]
                if c is None:  # short timeouts: a paused node must not stall the others
                    c = conns[name] = pymysql.connect(
                        unix_socket=sockets[name], user="root", connect_timeout=0.1,
                        read_timeout=0.1, autocommit=True)
                with c.cursor() as cur:
                    cur.execute("SELECT @@read_only")
                    return bool(cur.fetchone()[0] == 0)
            except (pymysql.MySQLError, OSError):
                conns[name] = None
                retry_at[name] = time.monotonic() + 0.05
                return False

        names = list(conns)
        while not self.stop.is_set():
            proven, seen = self.sample(names, writable)
            t = time.monotonic()
            self.samples.append((t, proven))
            self.seen.append((t, seen))
            time.sleep(0.005)

    @staticmethod
    def sample(names: list[str], writable: Callable[[str], bool]
               ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """One sample: (the nodes both reads found writable, those either read did)."""
        there = [n for n in names if writable(n)]
        back = [n for n in reversed(names) if writable(n)]
        return (tuple(n for n in names if n in there and n in back),
                tuple(n for n in names if n in there or n in back))

    def two_writable(self, excused: list[tuple[str, float, float]]) -> tuple[int, int]:
        """(samples with two writable nodes, samples where that is only because a node was
        inside an excused window (name, start, end): just resumed from SIGSTOP)."""
        strict = soft = 0
        for t, w in self.samples:
            if len(w) < 2:
                continue
            firm = [n for n in w if not any(n == e and a <= t <= b for e, a, b in excused)]
            if len(firm) > 1:
                strict += 1
            else:
                soft += 1
        return strict, soft

    def windows(self, since: float = 0.0) -> list[str]:
        """Every stretch of samples with more than one writable node, as "t=start..end
        (seconds, N samples): nodes" with times relative to `since` (monotonic)."""
        out: list[str] = []
        run: list[tuple[float, tuple[str, ...]]] = []
        for t, w in [*self.samples, (float("inf"), ())]:
            if len(w) > 1 and (not run or run[-1][1] == w):
                run.append((t, w))
                continue
            if run:
                a, b = run[0][0] - since, run[-1][0] - since
                out.append(f"t={a:7.2f}..{b:7.2f} ({b - a:.2f}s, {len(run)} samples): "
                           f"{', '.join(run[0][1])}")
            run = [(t, w)] if len(w) > 1 else []
        return out

    def __enter__(self) -> ReadOnlyWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def overlaps(self) -> int:
        """How many samples showed more than one writable node."""
        return sum(1 for _, w in self.samples if len(w) > 1)

    def longest_gap(self) -> float:
        """The longest stretch with no writable node (the write pause)."""
        gap, start = 0.0, None
        for t, w in self.samples:
            if not w and start is None:
                start = t
            elif w and start is not None:
                gap, start = max(gap, t - start), None
        return gap

    def never_two_writable(self, excused: list[tuple[str, float, float]] = ()) -> bool:  # type: ignore[assignment]
        """No sample with two writable nodes, except for a node inside an excused window
        (name, start, end): a primary just resumed from SIGSTOP is writable until its loop,
        resumed with it, fences it; it cannot commit then (semi-sync waits for replicas that
        follow the new primary), which the acknowledged-rows check proves."""
        for t, w in self.samples:
            strict = [n for n in w if not any(n == e and a <= t <= b for e, a, b in excused)]
            if len(strict) > 1 or (len(w) > 1 and len(strict) == 0):
                return False
        return True


def switchover(via: Node, to: str) -> str:
    import subprocess

    from tests.testbed.cluster import API_TOKEN, VENV_BIN
    if to:  # the primary refuses a target whose Consul check does not pass yet (right after
        # boot the role endpoints answer a moment before it does)
        wait_until(lambda: any(m["node"] == to and m["passing"]
                               for m in via.status()["members"]), timeout=30,
                   what=f"{via.name} to see Consul's check of {to} pass")
    out = subprocess.run([str(VENV_BIN / "autopilot-mysql"), "switchover", "--to", to,
                          "--url", via.url(""), "--wait", "30"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "API_TOKEN": API_TOKEN})
    assert out.returncode == 0, out.stderr + out.stdout
    return out.stdout


def test_switchover_both_directions_with_a_short_pause(cluster: list[Node]) -> None:
    a = primary(cluster)
    b = next(n for n in cluster if n is not a)
    acked = set(insert(a, 1, 100))
    for n in cluster:
        wait_until(lambda n=n: has_rows(n, acked), timeout=30, what=f"rows on {n.name}")
    pauses = []
    for old, to in ((a, b.name), (b, a.name), (a, "")):
        took = f"took the leader lock {old.name} handed over at"
        before = {n.name: n.log.read_text().count(took) for n in cluster}
        with ReadOnlyWatch(cluster) as watch:
            print(switchover(old, to).strip())
            new = wait_until(lambda old=old: next((n for n in cluster if n is not old
                                                   and n.http("/primary") == 200), None),
                             timeout=30, what=f"a new primary after {old.name}")
        assert watch.never_two_writable()
        assert not to or new.name == to
        pauses.append(watch.longest_gap())
        # election.I10: the target took the lock on the handover alone, no election (a
        # switchover "to the best replica" names its target before it hands over)
        assert new.log.read_text().count(took) == before[new.name] + 1
        # The former primary must not keep master-side semi-sync on as a replica: its SQL
        # thread would wait for an acknowledgement after every applied transaction.
        wait_until(lambda old=old: old.http("/replica") == 200, timeout=30,
                   what=f"{old.name} to replicate from {new.name}")
        with old.root() as c, c.cursor() as cur:
            cur.execute("SELECT @@rpl_semi_sync_master_enabled, @@rpl_semi_sync_slave_enabled")
            assert cur.fetchone() == (0, 1)
        acked |= set(insert(new, 1000 * len(pauses), 10))
        want = set(acked)
        for n in cluster:
            wait_until(lambda n=n, w=want: has_rows(n, w), timeout=30, what=f"rows on {n.name}")
        wait_until(lambda: roles(cluster).count("replica") == 2, timeout=30,
                   what="both other nodes replicating from the new primary")
    print("switchover write pauses: " + ", ".join(f"{p * 1000:.0f} ms" for p in pauses))
    # The history names each promotion, numbered (the timeline): the first primary, then the
    # three switchovers, each from the node that handed over.
    promoted = wait_until(lambda: (lambda h: h if len(h) == 4 else None)(
        history(a, "promoted")), timeout=30, what="four promotions in the history")
    assert [d["how"] for d in promoted] == ["first primary"] + ["switchover"] * 3, promoted
    assert [d["timeline"] for d in promoted] == [1, 2, 3, 4]
    assert [d["previous"] for d in promoted[1:]] == [a.name, b.name, a.name]
    assert [d["node"] for d in promoted[1:3]] == [b.name, a.name]
    # `list`: the whole cluster, from Consul inside a node's host and from a node's /cluster
    # outside, in every format; one primary, the others replicating, none behind at rest.
    now = primary(cluster)
    out = admin(b, "list", "-f", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["leader"] == now.name and doc["timeline"] == 4 and doc["paused"] is None
    rows = {m["name"]: m for m in doc["members"]}
    assert set(rows) == {n.name for n in cluster}
    assert rows[now.name]["role"] == "primary" and rows[now.name]["writable"] is True
    for n in cluster:
        if n is not now:
            assert rows[n.name]["role"] == "replica" and rows[n.name]["lag_transactions"] == 0
            assert isinstance(rows[n.name]["in_ack_set"], bool), rows
    outside = subprocess.run([str(VENV_BIN / "autopilot-mysql"), "list", "--url", b.url(""),
                              "-f", "yaml"], capture_output=True, text=True, timeout=30)
    assert outside.returncode == 0, outside.stderr
    assert yaml.safe_load(outside.stdout)["leader"] == now.name
    table = admin(now, "list")
    assert table.returncode == 0 and f"{now.name}" in table.stdout, table.stdout + table.stderr
    assert "primary (leader)" in table.stdout and "timeline 4" in table.stdout, table.stdout
    text = admin(now, "history")
    assert text.returncode == 0 and text.stdout.count("switchover") >= 3, text.stdout


def test_a_node_scaled_in_later_joins_as_a_replica(bed: TestBed, cluster: list[Node]) -> None:
    p = primary(cluster)
    acked = set(insert(p, 1, 30))
    db4 = make_node(bed.add_host("db4"))  # `docker-compose scale mysql=4`
    t0 = time.monotonic()
    db4.boot()
    wait_until(lambda: db4.http("/replica") == 200, timeout=BOOT_BOUND,
               what="the new node to replicate")
    wait_until(lambda: has_rows(db4, acked), timeout=30, what="existing rows on the new node")
    acked |= set(insert(p, 100, 5))
    wait_until(lambda: has_rows(db4, acked), timeout=30, what="new rows on the new node")
    st = db4.status()
    assert st["leader"] == p.name and st["server_id"] not in (
        n.status()["server_id"] for n in cluster)  # a cluster-unique server_id
    # Consul carries every node's role as a tag.
    import requests
    consul_ip = bed.hosts["consul"].ip
    entries = requests.get(f"http://{consul_ip}:8500/v1/catalog/service/mysql", timeout=3).json()
    tags = {e["ServiceMeta"]["node"]: e["ServiceTags"] for e in entries}
    assert tags[p.name] == ["primary"] and tags["db4"] == ["replica"]
    print(f"db4 replicating {time.monotonic() - t0:.1f}s after boot; tags {tags}")


def test_no_takeover_from_a_primary_that_acknowledged_alone(
        bed: TestBed, cluster: list[Node]) -> None:
    old = primary(cluster)
    rest = [n for n in cluster if n is not old]
    acked = set(insert(old, 1, 5))
    for n in rest:
        wait_until(lambda n=n: has_rows(n, acked), timeout=30, what="replicated rows")
    wait_until(lambda: synced(bed), timeout=30, what="the acknowledgement set to be synced")
    for n in rest:  # both replicas gone: the primary acknowledges alone, and says so first
        n.host.stop()
    wait_until(lambda: not synced(bed) and (sync_key(bed) or {}).get("primary") == old.name,
               timeout=60, what=f"{old.name} to record in Consul that it acknowledges alone")
    alone = set(insert(old, 100, 5))  # acknowledged with no replica
    old.host.kill()
    survivor = rest[0]
    survivor.boot()
    wait_until(lambda: "without a synchronous replica" in survivor.status()["last_decision"],
               timeout=90, what=f"{survivor.name} to refuse taking over")
    time.sleep(3)  # the refusal holds (a bounded look, not a wait for state)
    assert survivor.http("/primary") != 200 and not synced(bed)
    # The old primary comes back, takes the lock again, and nothing acknowledged is lost.
    old.boot()
    assert primary(cluster[:]) is old
    survivor.wait_http("/replica", 200, timeout=60)
    acked |= alone | set(insert(old, 200, 3))
    wait_until(lambda: has_rows(survivor, acked), timeout=30, what="every row on the survivor")
    wait_until(lambda: synced(bed), timeout=30,
               what="the set to be synced again once a replica holds everything")


def admin(node: Node, *argv: str) -> subprocess.CompletedProcess[str]:
    """An admin command run inside a node's host with its environment, as `docker compose exec
    mysql autopilot-mysql ...` runs it."""
    env = [f"{k}={v}" for k, v in node.env.items()]
    return node.host.exec(["env", *env, str(VENV_BIN / "autopilot-mysql"), *argv], check=False)


def history(node: Node, kind: str = "") -> list[dict[str, Any]]:
    """`autopilot-mysql history -f json` inside a node's host: the entries of `kind` (all)."""
    out = admin(node, "history", "-f", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    return [d for d in json.loads(out.stdout) if not kind or d.get("kind") == kind]


def test_an_operator_forces_a_blocked_failover_and_it_is_recorded(
        bed: TestBed, cluster: list[Node]) -> None:
    """election.I7: the primary and both replicas gone while it acknowledged alone; one replica
    comes back and refuses to take over. The operator is told what is lost, must say --force,
    and the decision is recorded; the lease rules still hold."""
    old = primary(cluster)
    rest = [n for n in cluster if n is not old]
    acked = set(insert(old, 1, 5))
    for n in rest:
        wait_until(lambda n=n: has_rows(n, acked), timeout=30, what="replicated rows")
    for n in rest:
        n.host.stop()
    wait_until(lambda: not synced(bed) and (sync_key(bed) or {}).get("primary") == old.name,
               timeout=60, what=f"{old.name} to record in Consul that it acknowledges alone")
    insert(old, 100, 3)  # only the old primary holds these: forcing loses them
    old.host.kill()
    survivor = rest[0]
    survivor.boot()
    wait_until(lambda: "without a synchronous replica" in survivor.status()["last_decision"],
               timeout=90, what=f"{survivor.name} to refuse taking over")
    asked = admin(survivor, "failover", "--candidate", survivor.name)
    assert asked.returncode == 2, asked.stdout + asked.stderr
    assert old.name in asked.stderr and "--force" in asked.stderr, asked.stderr
    assert survivor.http("/primary") != 200  # asking changed nothing
    forced = admin(survivor, "failover", "--candidate", survivor.name, "--force",
                   "--reason", "the old primary's disk is gone", "--wait", "60")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert f"{survivor.name} is the primary" in forced.stdout, forced.stdout
    survivor.wait_http("/primary", 200, timeout=30)
    assert has_rows(survivor, acked | set(insert(survivor, 200, 3)))
    requested = history(survivor, "forced-failover-requested")
    assert [d["reason"] for d in requested] == ["the old primary's disk is gone"], requested
    taken = history(survivor, "forced-failover")
    assert len(taken) == 1 and taken[0]["candidate"] == survivor.name, taken
    assert old.name in taken[0]["missing"], taken


def test_pause_blocks_failover_and_restarts_until_resumed(bed: TestBed,
                                                          cluster: list[Node]) -> None:
    """Maintenance mode: with the primary's host killed nobody takes over, and a replica's
    killed mysqld stays down; both shown by `list` and /status. `resume` lets the election
    run (nothing acknowledged is lost) and restarts mysqld; the history records it all."""
    old = primary(cluster)
    rest = [n for n in cluster if n is not old]
    acked = set(insert(old, 1, 20))
    for n in rest:
        wait_until(lambda n=n: has_rows(n, acked), timeout=30, what=f"rows on {n.name}")
    out = admin(rest[0], "pause", "--reason", "disk swap on the primary")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "maintenance mode ON" in out.stdout
    listed = json.loads(admin(rest[1], "list", "-f", "json").stdout)
    assert listed["paused"]["reason"] == "disk swap on the primary", listed
    assert "Maintenance mode: on" in admin(rest[1], "list").stdout
    metrics = requests.get(rest[1].url("/metrics"), timeout=5).text
    assert "autopilot_mysql_paused 1.0" in metrics, metrics

    # The primary's host dies: nobody takes over while paused.
    old.host.kill()
    for n in rest:
        wait_until(lambda n=n: "maintenance mode is on" in n.status()["last_decision"],
                   timeout=30, what=f"{n.name} to hold back from the election")
    # A replica's mysqld is killed: it stays down while paused.
    victim = rest[1]
    pid = victim.mysqld_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: "not restarted" in victim.status()["last_decision"], timeout=30,
               what=f"{victim.name} to leave its mysqld down")
    time.sleep(5)  # the lock is free (they said so): an election would have run by now
    assert all(n.http("/primary") != 200 for n in rest)
    assert victim.mysqld_pid() is None and victim.status()["mysqld"] == "backoff"
    assert victim.status()["mysqld_exits"] == 1

    out = admin(rest[0], "resume")
    assert "maintenance mode OFF" in out.stdout, out.stdout + out.stderr
    new = wait_until(lambda: next((n for n in rest if n.http("/primary") == 200), None),
                     timeout=60, what="a new primary after resume")
    wait_until(lambda: victim.mysqld_pid() is not None, timeout=30,
               what=f"{victim.name}'s mysqld to start again after resume")
    acked |= set(insert(new, 100, 5))
    for n in rest:
        wait_until(lambda n=n: has_rows(n, acked), timeout=60, what=f"every row on {n.name}")
    kinds = [d["kind"] for d in history(new)]
    assert kinds.index("paused") < kinds.index("resumed") < len(kinds) - 1, kinds
    last = history(new, "promoted")[-1]
    assert last["node"] == new.name and last["how"] == "election" and last["previous"] == old.name


def test_a_nofailover_node_is_never_elected(bed: TestBed) -> None:
    """NOFAILOVER on db1, the node booted first: the first election, a failover and a
    switchover all pass it by; it replicates asynchronously (never in the acknowledgement
    set, so no election ever needs it), and `list` shows its tag."""
    nodes = boot_cluster(bed, 3, per_node={"db1": {"NOFAILOVER": "true"}})
    db1 = nodes[0]
    first = primary(nodes)
    assert first is not db1
    assert db1.name not in (sync_key(bed) or {}).get("members", {}), sync_key(bed)
    acked = set(insert(first, 1, 10))
    wait_until(lambda: has_rows(db1, acked), timeout=30, what="rows on db1")
    doc = json.loads(admin(db1, "list", "-f", "json").stdout)
    assert {m["name"]: m["tags"] for m in doc["members"]}[db1.name] == {"nofailover": "true"}
    refused = subprocess.run([str(VENV_BIN / "autopilot-mysql"), "switchover", "--to", db1.name,
                              "--url", first.url(""), "--wait", "5"],
                             capture_output=True, text=True, timeout=30,
                             env={**os.environ, "API_TOKEN": API_TOKEN})
    assert refused.returncode != 0 and "NOFAILOVER" in refused.stderr, refused.stderr
    assert primary(nodes) is first
    first.host.kill()
    rest = [n for n in nodes if n is not first]
    new = wait_until(lambda: next((n for n in rest if n.http("/primary") == 200), None),
                     timeout=60, what="a new primary")
    assert new is not db1
    assert "NOFAILOVER" in db1.log.read_text()
    acked |= set(insert(new, 100, 5))
    wait_until(lambda: has_rows(db1, acked), timeout=60, what="every row on db1")


def test_switchover_from_inside_a_container_checked_confirmed_and_scheduled(
        cluster: list[Node]) -> None:
    """`switchover` as patronictl's: through Consul from a node's container, checked against
    the cluster (--leader, the candidate), never without a confirmation (no terminal: only
    --force), at once or at a scheduled time (shown by `list`, withdrawn by --cancel)."""
    old = primary(cluster)
    to, other = [n for n in cluster if n is not old]
    wrong = admin(to, "switchover", "--leader", to.name, "--candidate", other.name, "--force")
    assert wrong.returncode == 1 and f"{old.name} is" in wrong.stderr, wrong.stderr
    unasked = admin(to, "switchover", "--candidate", other.name)
    assert unasked.returncode == 2 and "--force" in unasked.stderr, unasked.stderr
    assert primary(cluster) is old
    # Scheduled a few seconds ahead: pending (and shown) until then, then carried out.
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 6))
    out = admin(to, "switchover", "--leader", old.name, "--candidate", to.name, "--scheduled",
                at, "--force")
    assert out.returncode == 0 and "scheduled" in out.stdout, out.stdout + out.stderr
    doc = json.loads(admin(other, "list", "-f", "json").stdout)
    assert doc["switchover"]["to"] == to.name and doc["switchover"]["at"] == at, doc
    time.sleep(2)
    assert primary(cluster) is old  # not before its time
    wait_until(lambda: to.http("/primary") == 200, timeout=30,
               what=f"the scheduled switchover to {to.name}")
    assert json.loads(admin(other, "list", "-f", "json").stdout)["switchover"] is None
    # One far ahead is withdrawn.
    out = admin(other, "switchover", "--scheduled", "2099-01-01T00:00Z", "--force")
    assert out.returncode == 0, out.stdout + out.stderr
    out = admin(other, "switchover", "--cancel")
    assert "withdrew" in out.stdout, out.stdout + out.stderr
    assert json.loads(admin(other, "list", "-f", "json").stdout)["switchover"] is None
    # At once, to the best replica, confirmed by --force.
    out = admin(other, "switchover", "--force")
    assert out.returncode == 0 and "switchover done" in out.stdout, out.stdout + out.stderr
    assert primary(cluster) is not to


def test_reinit_rebuilds_a_replica_from_a_live_copy(cluster: list[Node]) -> None:
    """`reinit NODE`: refused for the primary; a replica rebuilds itself (no snapshots
    here: a copy of a live node), replicates again on new data with every row, and the
    history records it."""
    p = primary(cluster)
    victim = next(n for n in cluster if n is not p)
    acked = set(insert(p, 1, 50))
    wait_until(lambda: has_rows(victim, acked), timeout=30, what="rows on the victim")
    refused = admin(victim, "reinit", p.name, "--force")
    assert refused.returncode == 1 and "switch over first" in refused.stderr.lower(), \
        refused.stderr
    before = victim.status()["data_id"]
    out = admin(victim, "reinit", victim.name, "--force", "--reason", "suspect disk",
                "--wait", "180")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "re-provisioned" in out.stdout
    assert victim.status()["data_id"] != before
    assert "RE-PROVISIONING this node: an operator asked for it" in victim.log.read_text()
    acked |= set(insert(p, 100, 5))
    wait_until(lambda: has_rows(victim, acked), timeout=60, what="every row on the victim")
    done = history(victim, "reinit-done")
    assert done and done[-1]["node"] == victim.name and done[-1]["reason"] == "suspect disk"


def write_initdb(d: Path) -> None:
    """One script of every kind /docker-entrypoint-initdb.d takes."""
    import gzip
    d.mkdir()
    (d / "01-schema.sql").write_text(
        "CREATE TABLE seeded (id INT PRIMARY KEY AUTO_INCREMENT, src VARCHAR(40));\n"
        "INSERT INTO seeded (src) VALUES ('sql');\n")
    (d / "02-data.sql.gz").write_bytes(gzip.compress(
        b"INSERT INTO seeded (src) VALUES ('gz');\n"))
    (d / "03-data.sql.zst").write_bytes(subprocess.run(
        ["zstd", "-c"], input=b"INSERT INTO seeded (src) VALUES ('zst');\n",
        capture_output=True, check=True).stdout)
    (d / "04-more.sh").write_text(
        "#!/bin/sh\nset -e\nmariadb app -e \"INSERT INTO seeded (src) VALUES "
        "('sh-$(hostname)')\"\n")


def seeded(n: Node) -> list[str] | None:
    try:
        with n.app() as c, c.cursor() as cur:
            cur.execute("SELECT src FROM seeded ORDER BY id")
            return [r[0] for r in cur.fetchall()]
    except pymysql.MySQLError:
        return None


def test_user_hooks_and_initdb_scripts_and_a_failing_health_hook_hands_the_primary_over(
        bed: TestBed) -> None:
    """hooks.d as an operator writes it: a recording hook for every event, and a health hook
    that fails while a flag file exists. The primary whose health hook fails reports
    unhealthy (its reason in /status) and loses the role to another node. The same cluster
    has /docker-entrypoint-initdb.d scripts: .sql, .sql.gz, .sql.zst and .sh run in name
    order once, on the first primary, in MARIADB_DATABASE, through the binary log to every
    replica; the next primary never runs them again."""
    initdb = bed.root / "initdb.d"
    write_initdb(initdb)
    hooks = bed.root / "hooks.d"
    hooks.mkdir()
    calls = bed.root / "calls"
    for event in ("on-start", "on-role-change", "on-stop"):
        p = hooks / event
        p.write_text(f'#!/bin/sh\necho "$AUTOPILOT_NODE $1 $2 $3" >> {calls}\n')
        p.chmod(0o755)
    health = hooks / "health"
    health.write_text(f'#!/bin/sh\nif [ -e {bed.root}/sick-$AUTOPILOT_NODE ]; then\n'
                      '  echo "the application schema check failed"; exit 1\nfi\n')
    health.chmod(0o755)
    nodes = boot_cluster(bed, 3, HOOKS_DIR=str(hooks), HOOK_HEALTH_INTERVAL="1",
                         INITDB_DIR=str(initdb))
    old = primary(nodes)
    want = ["sql", "gz", "zst", f"sh-{old.name}"]
    for n in nodes:
        wait_until(lambda n=n: seeded(n) == want, timeout=60,
                   what=f"the initdb scripts' rows on {n.name}")
    wait_until(lambda: old.status()["extra"].get("initdb") == "done", timeout=30,
               what="the first primary to record the run")

    def recorded() -> list[str]:
        return calls.read_text().splitlines() if calls.exists() else []

    wait_until(lambda: f"{old.name} on-role-change primary mysql" in recorded(), timeout=30,
               what="the primary's role-change hook")
    for n in nodes:
        assert f"{n.name} on-start unknown mysql" in recorded()
        if n is not old:
            wait_until(lambda n=n: f"{n.name} on-role-change replica mysql" in recorded(),
                       timeout=30, what=f"{n.name}'s role-change hook")
    (bed.root / f"sick-{old.name}").touch()
    new = wait_until(lambda: next((n for n in nodes if n is not old
                                   and n.http("/primary") == 200), None), timeout=60,
                     what="another primary once the old one's health hook fails")
    st = old.status()
    assert not st["healthy"] and "application schema check failed" in st["last_error"], st
    wait_until(lambda: f"{new.name} on-role-change primary mysql" in recorded(), timeout=30,
               what="the new primary's role-change hook")
    time.sleep(2)  # a few cycles of the new primary: it must not run the scripts again
    assert seeded(new) == want and "running the initdb scripts" not in new.log.read_text()
    (bed.root / f"sick-{old.name}").unlink()
    old.wait_http("/replica", 200, timeout=60)
    old.host.stop()
    wait_until(lambda: f"{old.name} on-stop replica mysql" in recorded(), timeout=10,
               what="the on-stop hook")


def test_a_recreated_container_keeps_its_node_name(bed: TestBed, cluster: list[Node]) -> None:
    """A container recreated on its volume gets a new hostname and a new address: with no
    NODE_NAME set it comes back under the name its data directory recorded at the first
    boot, so Consul never holds a member that no longer exists."""
    p = primary(cluster)
    old = next(n for n in cluster if n is not p)
    acked = set(insert(p, 1, 10))
    wait_until(lambda: has_rows(old, acked), timeout=30, what="rows on the old container")
    old.host.stop()
    host = bed.add_host(f"{old.name}-recreated")
    again = make_node(host, MYSQL_DATADIR=old.env["MYSQL_DATADIR"])
    assert "NODE_NAME" not in again.env
    again.boot()
    again.wait_http("/replica", 200, timeout=90)
    assert again.status()["node"] == old.name
    assert "as recorded in the data directory" in again.log.read_text()
    doc = json.loads(admin(p, "list", "-f", "json").stdout)
    rows = {m["name"]: m for m in doc["members"]}
    assert set(rows) == {n.name for n in cluster}, rows
    assert rows[old.name]["host"] == host.ip
    acked |= set(insert(p, 100, 5))
    wait_until(lambda: has_rows(again, acked), timeout=60, what="every row after recreation")
