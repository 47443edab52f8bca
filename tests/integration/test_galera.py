"""TOPOLOGY=galera with real MariaDB and galera-4, Consul and HAProxy on the test bed: the same
image, supervisor, compose environment and HAProxy config as replication, with TOPOLOGY=galera.

Bound stated: three nodes from nothing to one writer and two Synced readers within 180 s (two
joins by mariabackup SST, each sleeping 10 s on the donor, one at a time)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
import requests

from autopilot_mysql.mysql import datadir as dd
from tests.integration.test_replication import has_rows, insert
from tests.integration.test_snapshots import pointer
from tests.testbed.bed import TestBed
from tests.testbed.cluster import (
    APP_DB,
    APP_PASSWORD,
    APP_USER,
    VENV_BIN,
    Node,
    boot_cluster,
    healthy_cluster,
    make_node,
    s3_env,
    start_router,
)
from tests.testbed.components import HAProxy, S3Server, start_consul
from tests.testbed.util import wait_until
from tests.testbed.workload import Writer, create_table, missing_on, writes_through_consul_outage

pytestmark = pytest.mark.integration
BOOT_BOUND = 180.0


@pytest.fixture
def galera(bed: TestBed) -> Iterator[tuple[list[Node], HAProxy]]:
    t0 = time.monotonic()
    nodes = boot_cluster(bed, 3, timeout=BOOT_BOUND, TOPOLOGY="galera")
    print(f"three Galera nodes: one writer, two Synced readers in {time.monotonic() - t0:.1f}s")
    lb = start_router(bed)
    yield nodes, lb


def kv(bed: TestBed, key: str) -> Any:
    r = requests.get(f"http://{bed.hosts['consul'].ip}:8500/v1/kv/service/mysql/{key}",
                     timeout=2)
    if r.status_code == 404:
        return None
    return json.loads(base64.b64decode(r.json()[0]["Value"]))


def writer(nodes: list[Node]) -> Node:
    return wait_until(lambda: next((n for n in nodes if n.host.running and not n.host.paused
                                    and n.http("/primary") == 200), None),
                      timeout=60, what="a writer")


def wsrep(node: Node) -> dict[str, str]:
    with node.root() as c, c.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'wsrep%'")
        return {str(k): str(v) for k, v in cur.fetchall()}


def through(lb: HAProxy, port: int, sql: str, args: tuple[object, ...] = ()) -> Any:
    with pymysql.connect(host=lb.host.ip, port=port, user=APP_USER, password=APP_PASSWORD,
                         database=APP_DB, connect_timeout=3, autocommit=True) as c, \
            c.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def every_row_everywhere(nodes: list[Node], acked: set[int]) -> None:
    for n in nodes:
        wait_until(lambda n=n: not missing_on(n, acked), timeout=120,
                   what=f"every acknowledged row on {n.name} "
                        f"(missing {sorted(missing_on(n, acked))[:5]})")


def bootstrap_writes_through_3306_and_reads_back_through_3307_on_every_node(
        bed: TestBed, nodes: list[Node], lb: HAProxy) -> None:
    """A new cluster: one Galera cluster recorded in Consul, one writer, readers that refuse
    writes, HAProxy routing writes to the writer and reads to every reader, the SST account
    limited (checked first by the switchover test, on its new cluster: one boot fewer)."""
    w = writer(nodes)
    states = {n.name: wsrep(n) for n in nodes}
    uuids = {s["wsrep_cluster_state_uuid"] for s in states.values()}
    assert len(uuids) == 1, states
    assert all(s["wsrep_cluster_size"] == "3" and s["wsrep_local_state_comment"] == "Synced"
               for s in states.values()), states
    record = kv(bed, "galera/cluster")
    assert record["uuid"] in uuids and record["epoch"] == 1, record
    # one writer: the others refuse writes, also for root over TCP (READ ONLY ADMIN revoked)
    for n in nodes:
        if n is not w:
            with pytest.raises(pymysql.MySQLError, match="read-only"), n.app() as c, \
                    c.cursor() as cur:
                cur.execute("CREATE TABLE nope (id INT PRIMARY KEY)")
    # HAProxy was just started: in its first second a server it resolved stays in rotation
    # until its checks fail (README, "Routing"), and loses its sessions then. So the write is
    # retried until HAProxy routes it (it is idempotent).
    def write() -> bool:
        through(lb, 3306, "CREATE TABLE IF NOT EXISTS g (id INT PRIMARY KEY, v VARCHAR(20)) "
                "ENGINE=InnoDB")
        through(lb, 3306, "REPLACE INTO g VALUES (1, 'through 3306')")
        return True
    wait_until(write, timeout=30, what="a write through HAProxy's 3306")
    seen = set()
    deadline = time.monotonic() + 30
    while seen != {n.name for n in nodes if n is not w} and time.monotonic() < deadline:
        try:
            rows = through(lb, 3307, "SELECT @@hostname, v FROM g WHERE id = 1")
        except pymysql.OperationalError:
            continue  # a session HAProxy shut down (a reader it just marked down, say)
        assert rows[0][1] == "through 3306"
        seen.add(rows[0][0])
    assert seen == {n.name for n in nodes if n is not w}, seen
    # the SST donor's account has no password and only what mariabackup needs
    with w.root() as c, c.cursor() as cur:
        cur.execute("SHOW GRANTS FOR mysql@localhost")
        grants = " ".join(r[0] for r in cur.fetchall())
    assert "ALL PRIVILEGES" not in grants and "RELOAD" in grants, grants
    for n in nodes:
        cnf = (n.host.dir / "run" / "my.cnf").read_text()
        assert "wsrep_sst_auth                 = mysql:\n" in cnf
    # `list` and `history` on Galera: the writer as the leader, its promotion the timeline's
    from tests.integration.test_replication import admin
    doc = json.loads(admin(nodes[0], "list", "-f", "json").stdout)
    assert doc["topology"] == "galera" and doc["leader"] == w.name, doc
    assert {m["name"]: m["role"] for m in doc["members"]} == {
        n.name: "primary" if n is w else "replica" for n in nodes}
    # (the writer role may move while members join: an SST donor is not Synced, and gives
    # the role up; each change is a new timeline, the current writer's the last)
    promoted = [e for e in json.loads(admin(nodes[1], "history", "-f", "json").stdout)
                if e["kind"] == "galera-writer"]
    assert [e["timeline"] for e in promoted] == list(range(1, len(promoted) + 1)), promoted
    assert promoted[-1]["node"] == w.name and doc["timeline"] == len(promoted), promoted


def test_reinit_a_reader_rejoins_by_a_full_state_transfer(
        bed: TestBed, galera: tuple[list[Node], HAProxy]) -> None:
    """`reinit NODE` on Galera: refused for the writer; a reader leaves cleanly, starts on
    freshly initialized data and joins by SST, with every row."""
    from tests.integration.test_replication import admin
    nodes, lb = galera
    w = writer(nodes)
    create_table(w)
    with w.app() as c, c.cursor() as cur:
        cur.executemany("INSERT INTO chaos VALUES (%s, 'x')", [(i,) for i in range(1, 51)])
    refused = admin(w, "reinit", w.name, "--force")
    assert refused.returncode == 1 and "is the writer" in refused.stderr, refused.stderr
    reader = next(n for n in nodes if n is not w)
    (reader.datadir / "old-data-marker").write_text("gone after the reinit\n")
    out = admin(reader, "reinit", reader.name, "--force", "--wait", "300")
    assert out.returncode == 0, out.stdout + out.stderr
    text = reader.log.read_text()
    assert "RE-PROVISIONING this node: an operator asked for it" in text
    assert not (reader.datadir / "old-data-marker").exists()  # the data was replaced
    wait_until(lambda: not missing_on(reader, set(range(1, 51))), timeout=60,
               what="every row on the re-provisioned reader")
    assert wsrep(reader)["wsrep_local_state_comment"] == "Synced"


def test_writer_host_killed_one_new_writer_and_the_old_one_rejoins_by_ist(
        bed: TestBed, galera: tuple[list[Node], HAProxy]) -> None:
    nodes, lb = galera
    old = writer(nodes)
    create_table(old)
    client = Writer(lb.host.ip)
    client.start()
    wait_until(lambda: len(client.acked) > 50, timeout=30, what="writes through HAProxy")
    t0 = time.monotonic()
    old.host.kill()
    rest = [n for n in nodes if n is not old]
    new = writer(rest)
    wait_until(lambda: any(a.at > t0 and a.server == new.name for a in client.acked.values()),
               timeout=60, what=f"writes through HAProxy on {new.name}")
    gap = client.longest_gap(t0, time.monotonic())
    print(f"writer {old.name} killed: {new.name} writes; longest write gap through HAProxy "
          f"{gap:.1f}s")
    # G11: its host's kernel refused the survivors' knocks on its Galera port: evicted, not
    # waited out (evs.suspect_timeout), and the eviction lists were emptied again
    assert any(re.search(rf"{old.name}'s Galera port \S+ refuses connections .*: evicting it",
                         n.log.read_text()) for n in rest), f"nobody evicted {old.name}"
    def evict_list(n: Node) -> str:
        with n.root() as c, c.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'wsrep_evs_evict_list'")
            return str(cur.fetchone()[1])
    for n in rest:
        wait_until(lambda n=n: evict_list(n) == "", timeout=15,
                   what=f"{n.name}'s eviction list emptied")
    old.host.restart(graceful=False)
    wait_until(lambda: healthy_cluster(nodes), timeout=120,
               what=f"{old.name} back as a Synced reader")
    client.halt()
    client.join(10)
    every_row_everywhere(nodes, set(client.acked))
    log = old.log.read_text()
    assert "IST received" in log, "the old writer should rejoin by IST, not a full SST"


def test_bootstrap_routes_and_a_switchover_moves_the_writer_both_ways_losing_no_write(
        bed: TestBed, galera: tuple[list[Node], HAProxy]) -> None:
    """The new cluster as bootstrapped (above); then galera.G8: fence, hand over at the last
    committed seqno, the target opens at once."""
    from tests.integration.test_replication import ReadOnlyWatch, switchover

    nodes, lb = galera
    bootstrap_writes_through_3306_and_reads_back_through_3307_on_every_node(bed, nodes, lb)
    old = writer(nodes)
    create_table(old)
    target = next(n for n in nodes if n is not old)
    client = Writer(lb.host.ip, first_id=1)
    client.start()
    wait_until(lambda: len(client.acked) > 50, timeout=60, what="writes through HAProxy")
    gaps = []
    for to in (target.name, ""):  # a named target, then any Synced reader
        t0 = time.monotonic()
        with ReadOnlyWatch(nodes) as watch:
            before = writer(nodes)
            print(switchover(before, to).strip())
            after = wait_until(lambda b=before: next(
                (n for n in nodes if n is not b and n.http("/primary") == 200), None),
                timeout=30, what="a new writer")
            wait_until(lambda a=after: any(x.at > time.monotonic() - 0.5 and x.server
                                           for x in client.acked.values()), timeout=30,
                       what=f"writes through HAProxy on {after.name}")
        assert not to or after.name == to, f"{after.name} took over, not {to}"
        assert watch.never_two_writable(), "two writable nodes in one sample"
        gaps.append((watch.longest_gap(), client.longest_gap(t0, time.monotonic())))
        assert kv(bed, "handover") is None  # cleared before the new writer opened
    client.halt()
    acked = set(client.acked)
    every_row_everywhere(nodes, acked)
    print("switchover pauses (no writable node; client gap through HAProxy): " + ", ".join(
        f"{a:.2f}s; {b:.2f}s" for a, b in gaps))


def test_failsafe_through_a_consul_outage_and_no_second_cluster_after_consul_lost_its_data(
        bed: TestBed, galera: tuple[list[Node], HAProxy]) -> None:
    """galera.G9: the Consul server down for 20 s; every member confirms over HTTP. Then
    galera.G12 (one boot for both): Consul rebuilt from empty while a member is down."""
    nodes, _ = galera
    w = writer(nodes)
    create_table(w)
    client = Writer(w.host.ip)  # straight to the writer: HAProxy resolves servers by Consul
    client.start()
    wait_until(lambda: len(client.acked) > 20, timeout=30, what="writes")
    accepted, gap = writes_through_consul_outage(bed, client, 20)
    client.halt()
    print(f"Consul down 20s: {accepted} writes accepted meanwhile, longest gap {gap:.2f}s "
          f"({client.errors} errors)")
    assert "failsafe" in w.log.read_text() and accepted > 0, "the writer fenced"
    assert writer(nodes) is w
    every_row_everywhere(nodes, set(client.acked))
    consul_lost_its_data_while_a_member_was_down(bed, nodes, set(client.acked))


def consul_lost_its_data_while_a_member_was_down(bed: TestBed, nodes: list[Node],
                                                 acked: set[int]) -> None:
    """G12: a reader stopped cleanly; the other two frozen (so that nothing records the
    cluster again yet), Consul wiped and started; the reader boots and finds its data of a
    cluster and no record of it. It must not bootstrap a second cluster (before G12 its census
    of one chose it). Once the others run again, one records the cluster again, with the
    same UUID, and the reader joins it."""
    uuid = kv(bed, "galera/cluster")["uuid"]
    gone = next(n for n in nodes if n.http("/replica") == 200)
    others = [n for n in nodes if n is not gone]
    gone.host.stop()
    for n in others:
        n.host.pause()
    chost = bed.hosts["consul"]
    chost.kill_spawned(next(x for x in chost._spawned if x.poll() is None))
    shutil.rmtree(chost.dir / "consul" / "data")
    start_consul(chost)
    size = gone.log.stat().st_size  # its log so far holds its first boot (a bootstrap, maybe)

    def since_boot() -> str:
        return gone.log.read_bytes()[size:].decode(errors="replace")
    try:
        gone.boot()
        wait_until(lambda: re.search(r"\(G12\)|bootstrapping the Galera cluster", since_boot()),
                   timeout=60, what=f"{gone.name} to find data of a cluster and no record of it")
        time.sleep(3)  # a few more cycles: it must go on waiting
        assert "bootstrapping the Galera cluster" not in since_boot(), \
            f"{gone.name} bootstrapped a second cluster"
        from tests.integration.test_replication import admin
        census = admin(gone, "galera", "bootstrap")
        assert "Consul lost its data" in census.stdout, census.stdout + census.stderr
    finally:
        for n in others:
            n.host.resume()
    wait_until(lambda: healthy_cluster(nodes), timeout=BOOT_BOUND,
               what="one writer and two Synced readers again")
    assert {wsrep(n)["wsrep_cluster_state_uuid"] for n in nodes} == {uuid}
    record = wait_until(lambda: kv(bed, "galera/cluster"), timeout=30,
                        what="the cluster recorded again")
    assert record["uuid"] == uuid, record
    assert "bootstrapping the Galera cluster" not in since_boot()
    every_row_everywhere(nodes, acked)
    w = writer(nodes)
    create_table(w, "after_rebuild")
    print(f"Consul rebuilt from empty while {gone.name} was down: it waited (G12), "
          f"{record['by']} recorded {uuid} again at seqno {record['seqno']}, "
          f"{gone.name} joined; writer {w.name}")


def test_a_full_volume_takes_a_reader_out_and_moves_the_writer_role_away(bed: TestBed) -> None:
    """galera.G10: db1 has a 600 MiB volume of its own, the others room. Full as a reader, it
    leaves (its applier would stall the cluster) and joins again by IST; full as the writer,
    it hands the role over to a reader with room."""
    from tests.integration.test_replication import switchover

    nodes = boot_cluster(bed, 3, timeout=BOOT_BOUND, volumes={"db1": 600},
                         DISK_MIN_FREE="64M", TOPOLOGY="galera")
    lb = start_router(bed)
    db1 = nodes[0]
    if writer(nodes) is db1:
        switchover(db1, nodes[1].name)
    wait_until(lambda: db1.http("/replica") == 200, timeout=30, what="db1 a Synced reader")
    create_table(writer(nodes))
    client = Writer(lb.host.ip)
    client.start()
    wait_until(lambda: len(client.acked) > 20, timeout=30, what="writes through HAProxy")
    # As a reader: out of the component, and the cluster keeps committing.
    ballast = db1.host.fill(db1.datadir, leave_mb=40)
    wait_until(lambda: db1.status()["mysqld"] == "stopped", timeout=30,
               what="db1 to leave the component")
    t0 = time.monotonic()
    wait_until(lambda: len([a for a in client.acked.values() if a.at > t0]) > 50, timeout=30,
               what="writes while db1 is out")
    wait_until(lambda: "DISK_MIN_FREE" in db1.status()["last_decision"], timeout=30,
               what="db1 to say it waits for room before it joins again")
    ballast.unlink()
    wait_until(lambda: db1.http("/replica") == 200, timeout=90, what="db1 back by IST")
    # As the writer: the role moves to a reader with room.
    switchover(writer(nodes), db1.name)
    wait_until(lambda: db1.http("/primary") == 200, timeout=30, what="db1 the writer")
    ballast = db1.host.fill(db1.datadir, leave_mb=40)
    t1 = time.monotonic()
    new = writer([n for n in nodes if n is not db1])
    wait_until(lambda: any(a.at > t1 and a.server == new.name for a in client.acked.values()),
               timeout=30, what=f"writes through HAProxy on {new.name}")
    print(f"db1's volume filled as the writer: {new.name} took over, longest write gap "
          f"{client.longest_gap(t1, time.monotonic()):.2f}s")
    ballast.unlink()
    wait_until(lambda: db1.http("/replica") == 200, timeout=90, what="db1 back as a reader")
    client.halt()
    every_row_everywhere(nodes, set(client.acked))


def test_coordinated_crash_recovers_from_the_most_advanced_node_with_every_row(
        bed: TestBed, galera: tuple[list[Node], HAProxy]) -> None:
    nodes, lb = galera
    create_table(writer(nodes))
    client = Writer(lb.host.ip, pause=0)
    client.start()
    wait_until(lambda: len(client.acked) > 200, timeout=30, what="writes through HAProxy")
    first = kv(bed, "galera/cluster")
    epochs, seqnos = [first["epoch"]], [first["seqno"]]
    acked: set[int] = set()
    for round_ in range(2):
        for n in nodes:  # SIGKILL of every host within well under a second
            n.host.kill()
        client.halt()
        client.join(10)
        acked |= set(client.acked)
        t0 = time.monotonic()
        for n in nodes:
            n.host.restart(graceful=False)
        wait_until(lambda: healthy_cluster(nodes), timeout=180,
                   what=f"round {round_}: the cluster back on its own")
        took = time.monotonic() - t0
        every_row_everywhere(nodes, acked)
        record = kv(bed, "galera/cluster")
        assert record["epoch"] == epochs[-1] + 1 and not record["forced"], record
        assert record["seqno"] > seqnos[-1], (record, seqnos)  # writes happened since: never back
        epochs.append(record["epoch"])
        seqnos.append(record["seqno"])
        print(f"round {round_}: back {took:.1f}s after the restart, {len(acked)} acknowledged "
              f"rows, every one on every node; bootstrapped by {record['by']} from seqno "
              f"{record['seqno']}")
        client = Writer(lb.host.ip, pause=0, first_id=(round_ + 1) * 10**7)
        client.start()
        wait_until(lambda c=client: len(c.acked) > 100, timeout=60,
                   what="writes through HAProxy again")
    client.halt()
    client.join(10)
    every_row_everywhere(nodes, acked | set(client.acked))


def test_scale_to_five_with_no_config_change(
        bed: TestBed, galera: tuple[list[Node], HAProxy]) -> None:
    nodes, lb = galera
    create_table(writer(nodes))
    client = Writer(lb.host.ip)
    client.start()
    t0 = time.monotonic()
    more = [make_node(bed.add_host(f"db{i}"), TOPOLOGY="galera") for i in (4, 5)]
    for n in more:
        n.boot()
    everyone = nodes + more
    wait_until(lambda: healthy_cluster(everyone), timeout=180,
               what="one writer and four Synced readers")
    print(f"two more nodes joined by state transfer in {time.monotonic() - t0:.1f}s")
    assert {wsrep(n)["wsrep_cluster_size"] for n in everyone} == {"5"}
    client.halt()
    client.join(10)
    every_row_everywhere(everyone, set(client.acked))


def test_a_partitioned_node_refuses_service_and_rejoins_after_the_heal(
        bed: TestBed, galera: tuple[list[Node], HAProxy]) -> None:
    nodes, lb = galera
    w = writer(nodes)
    create_table(w)
    cut = next(n for n in nodes if n is not w)
    client = Writer(lb.host.ip)
    client.start()
    rules = bed.partition([cut.host])
    wait_until(lambda: cut.http("/replica") == 503 and cut.http("/health") == 503, timeout=30,
               what=f"{cut.name} to stop serving")
    with pytest.raises(pymysql.MySQLError) as err, cut.app() as c, c.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM chaos")
    assert err.value.args[0] == 1047, err.value  # "WSREP has not yet prepared node"
    assert cut.mysqld_pid() is not None, "the partitioned node keeps running"
    before = len(client.acked)
    wait_until(lambda: len(client.acked) > before + 50, timeout=30,
               what="writes on the majority meanwhile")
    bed.heal(rules)
    wait_until(lambda: healthy_cluster(nodes), timeout=90,
               what=f"{cut.name} back as a Synced reader on its own")
    client.halt()
    client.join(10)
    every_row_everywhere(nodes, set(client.acked))


def test_a_joiner_killed_mid_sst_and_a_bootstrapper_killed_in_recovery_need_no_operator(
        bed: TestBed, galera: tuple[list[Node], HAProxy]) -> None:
    nodes, lb = galera
    create_table(writer(nodes))
    client = Writer(lb.host.ip, pause=0)
    client.start()
    wait_until(lambda: len(client.acked) > 200, timeout=30, what="writes through HAProxy")
    joiner = make_node(bed.add_host("db4"), TOPOLOGY="galera")
    joiner.boot()
    wait_until(lambda: "--role 'joiner'" in joiner.log.read_text(), timeout=60,
               what="db4's state transfer to start")
    joiner.host.kill()
    print("db4 killed in the middle of its state transfer")
    joiner.host.restart(graceful=False)
    everyone = [*nodes, joiner]
    wait_until(lambda: healthy_cluster(everyone), timeout=180,
               what="db4 joined after all, on its own")
    # a coordinated crash, then the node that claims the bootstrap dies as it starts
    epoch = kv(bed, "galera/cluster")["epoch"]
    for n in everyone:
        n.host.kill()
    client.halt()
    client.join(10)
    acked = set(client.acked)
    for n in everyone:
        n.host.restart(graceful=False)
    record = wait_until(lambda: (r := kv(bed, "galera/cluster"))["epoch"] > epoch and r,
                        timeout=120, what="a bootstrap claim")
    boot = next(n for n in everyone if n.name == record["by"])
    boot.host.kill()
    print(f"{boot.name} killed right after it claimed the bootstrap (epoch {record['epoch']})")
    time.sleep(2)
    boot.host.restart(graceful=False)
    wait_until(lambda: healthy_cluster(everyone), timeout=180,
               what="the cluster back on its own after its bootstrapper died")
    every_row_everywhere(everyone, acked)


def test_a_joiner_whose_whole_component_died_mid_transfer_stops_for_the_census(
        bed: TestBed, galera: tuple[list[Node], HAProxy]) -> None:
    """CI's nemesis seed 231689: a joiner lost its donor, and with it the last Primary
    Component, during its state transfer. Its mysqld never answers and never exits, and the
    census (G2) waited for ever on "db3 is starting". Now it stops after NON_PRIMARY_GRACE
    (G7) and takes part in the census; the cluster comes back with no operator."""
    nodes, lb = galera
    create_table(writer(nodes))
    client = Writer(lb.host.ip, pause=0)
    client.start()
    wait_until(lambda: len(client.acked) > 200, timeout=30, what="writes through HAProxy")
    joiner = next(n for n in nodes if n.http("/primary") != 200)
    joiner.host.kill()
    dd.empty_dir(joiner.datadir)  # a fresh volume: it joins by a full state transfer
    size = joiner.log.stat().st_size
    joiner.host.restart(graceful=False)
    wait_until(lambda: "--role 'joiner'" in joiner.log.read_bytes()[size:].decode(),
               timeout=90, what=f"{joiner.name}'s state transfer to start")
    rest = [n for n in nodes if n is not joiner]
    for n in rest:  # the donor sleeps 10 s before it streams: both die meanwhile
        n.host.kill()
    client.halt()
    client.join(10)
    acked = set(client.acked)
    print(f"{', '.join(n.name for n in rest)} killed during {joiner.name}'s state transfer")
    for n in rest:
        n.host.restart(graceful=False)
    wait_until(lambda: "its state transfer cannot finish" in
               joiner.log.read_bytes()[size:].decode(), timeout=120,
               what=f"{joiner.name} to stop its stuck mysqld for the census")
    wait_until(lambda: healthy_cluster(nodes), timeout=240,
               what="the cluster back on its own, the joiner included")
    record = kv(bed, "galera/cluster")
    assert record["by"] != joiner.name and not record["forced"], record  # it held no data
    every_row_everywhere(nodes, acked)


def test_a_new_node_starts_from_a_snapshot_taken_on_a_reader_and_joins_by_ist(
        bed: TestBed, s3: S3Server) -> None:
    """Issue 10, 8: the schedule takes the cluster's snapshot on a Synced reader with
    --galera-info (never on the writer: `backup now` there is refused); a node that boots
    empty restores it and joins by IST, not by a full state transfer. A reader made the writer
    while its snapshot runs abandons it and writes, Synced."""
    env = s3_env(s3, "snapshots", SNAPSHOT_INTERVAL="0", S3_TIMEOUT="3")
    nodes = boot_cluster(bed, 3, timeout=BOOT_BOUND, TOPOLOGY="galera", **env)
    w = writer(nodes)
    acked = set(insert(w, 1, 40))
    first = wait_until(lambda: pointer(bed), timeout=120, what="the first snapshot")
    manifest = json.loads(s3.client().get_object(
        Bucket="snapshots", Key=f"mysql/snapshots/{first['id']}/manifest.json")["Body"].read())
    assert manifest["galera_uuid"] == kv(bed, "galera/cluster")["uuid"]
    # Taken on a reader, which was not made the writer before it finished (the writer role can
    # move while the cluster boots: a donor gives it up; a snapshot begun on a reader that
    # becomes the writer is abandoned and taken again on a reader).
    assert manifest["role"] == "replica", manifest
    # (mariabackup is what would stall a writer's commits: the verification and the
    # publication after it may run on a node made the writer meanwhile)
    taker = next(n for n in nodes if n.name == first["node"]).log.read_text()
    done = taker.index(f"snapshot {first['id']}: mariabackup finished")
    during = taker[taker.rindex("snapshot: starting", 0, done):done]
    assert "this node is the writer" not in during, "mariabackup ran on the Galera writer"
    refused = w.host.exec(["env", *[f"{k}={v}" for k, v in w.env.items()],
                           str(VENV_BIN / "autopilot-mysql"), "backup", "now"], check=False)
    assert refused.returncode != 0 and "is the Galera writer" in refused.stderr, refused
    acked |= set(insert(w, 100, 40))  # the new node gets these by IST
    full = "Sleeping before data transfer for SST"  # a donor's full SST (MARIADB-NOTES)
    ssts = sum(n.log.read_text().count(full) for n in nodes)
    db4 = make_node(bed.add_host("db4"), TOPOLOGY="galera", **env)
    t0 = time.monotonic()
    db4.boot()
    db4.wait_http("/replica", 200, timeout=180)
    print(f"db4 restored snapshot {first['id']} and joined in {time.monotonic() - t0:.1f}s")
    log = db4.log.read_text()
    assert f"restoring snapshot {first['id']}" in log
    assert "IST received" in log, "the node should join by IST from the snapshot's position"
    assert sum(n.log.read_text().count(full) for n in nodes) == ssts, "a donor streamed an SST"
    acked |= set(insert(w, 200, 10))
    for n in [*nodes, db4]:
        wait_until(lambda n=n: has_rows(n, acked), timeout=60, what=f"every row on {n.name}")

    # The writer role reaches a reader halfway through its snapshot: mariabackup is killed
    # (frozen here with SIGSTOP so the switchover surely lands mid-backup), nothing is
    # published, and the node writes as a Synced writer (no desync or backup lock left over).
    from tests.integration.test_replication import switchover
    with w.app() as c, c.cursor() as cur:  # enough data that the copy phase takes a while
        cur.execute("CREATE TABLE ballast (id INT PRIMARY KEY, b VARBINARY(1024))")
        for k in range(8):
            cur.execute("INSERT INTO ballast SELECT seq, RANDOM_BYTES(1024) FROM "
                        f"seq_{k * 10000 + 1}_to_{(k + 1) * 10000}")
            c.commit()
    r = next(n for n in nodes if n is not w)
    backup = r.host.spawn(["env", *[f"{k}={v}" for k, v in r.env.items()],
                           str(VENV_BIN / "autopilot-mysql"), "backup", "now"], log="now.log")
    mb = ["pgrep", "-x", "mariabackup"]
    wait_until(lambda: r.host.exec(mb, check=False).returncode == 0, timeout=60,
               what=f"mariabackup running on {r.name}")
    r.host.exec(["pkill", "-STOP", "-x", "mariabackup"])
    switchover(w, r.name)
    assert backup.wait(60) != 0
    out = (r.host.dir / "now.log").read_text()
    assert "snapshot abandoned" in out and "became the Galera writer" in out, out
    assert r.host.exec(mb, check=False).returncode != 0, "mariabackup left running"
    assert pointer(bed)["id"] == first["id"], "an abandoned snapshot was published"
    state = wsrep(r)
    assert state["wsrep_local_state_comment"] == "Synced", state
    with r.root() as c, c.cursor() as cur:
        cur.execute("SELECT @@wsrep_desync")
        assert cur.fetchone()[0] == 0, "the killed backup left the node desynced"
    assert r.http("/primary") == 200
    acked |= set(insert(r, 300, 10))
    for n in [*nodes, db4]:
        wait_until(lambda n=n: has_rows(n, acked), timeout=60, what=f"every row on {n.name}")
