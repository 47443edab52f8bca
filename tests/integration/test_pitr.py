"""Point-in-time recovery on the test bed (issue 13): real MinIO, Consul, MariaDB,
mariabackup and mariadb-binlog. A writer runs across a failover, a switchover that moves the
archive to another node, and the bucket partitioned away; a table is dropped at a known time;
`restore --to-time` one second earlier gives every row committed before it and none after,
`restore --to-gtid` every row up to that transaction, a corrupt segment stops a restore
before it, and `--new-cluster` boots a cluster of its own from the point; the archive, read
back segment by segment, holds every transaction once, in order, with no gap.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from autopilot_mysql.backup import binlog
from autopilot_mysql.backup.snapshot import throwaway_server
from autopilot_mysql.gtid import Gtid
from autopilot_mysql.mysql.server import LocalServer
from tests.integration.test_replication import primary, switchover
from tests.integration.test_snapshots import BUCKET, consul_kv, new_pointer
from tests.testbed.bed import TestBed
from tests.testbed.cluster import VENV_BIN, Node, boot_cluster, make_node, s3_env
from tests.testbed.components import S3Server
from tests.testbed.util import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
Row = tuple[int, float, float, str]  # id, client time before the commit, after it, its GTID


def archive(bed: TestBed) -> dict[str, Any]:
    return consul_kv(bed, "service/mysql-binlogs/state") or {}


def write(node: Node, first: int, seconds: float, rows: list[Row]) -> int:
    """One row per commit for `seconds`; each acknowledged row with its GTID."""
    i = first
    with node.app() as c, c.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS pitr (id INT PRIMARY KEY, at DOUBLE) "
                    "ENGINE=InnoDB")
        end = time.time() + seconds
        while time.time() < end:
            t0 = time.time()
            cur.execute("INSERT INTO pitr VALUES (%s, %s)", (i, t0))
            cur.execute("SELECT @@last_gtid")
            rows.append((i, t0, time.time(), str(cur.fetchone()[0])))
            i += 1
            time.sleep(0.01)
    return i


def restore(node: Node, target: Path, *args: str) -> str:
    out = node.host.exec(["env", *[f"{k}={v}" for k, v in node.env.items()],
                          str(VENV_BIN / "autopilot-mysql"), "restore", *args,
                          "--target", str(target)], check=False, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def restored_ids(target: Path) -> set[int] | None:
    """The ids in app.pitr of a restored directory (None: the table is not there)."""
    found: list[set[int] | None] = []

    def read(sock: Path) -> None:
        srv = LocalServer(sock, connect_timeout=2, read_timeout=60)
        try:
            if not srv.execute("SELECT 1 FROM information_schema.tables WHERE "
                               "table_schema = 'app' AND table_name = 'pitr'"):
                found.append(None)
                return
            found.append({int(r[0]) for r in srv.execute("SELECT id FROM app.pitr")})
        finally:
            srv.close()

    throwaway_server(target, read)
    return found[0]


def chain(s3: S3Server) -> list[Gtid]:
    """Every transaction in the archive, segment after segment."""
    c = s3.client()
    keys = sorted(o["Key"] for o in c.list_objects_v2(Bucket=BUCKET, Prefix="mysql/binlogs/")
                  .get("Contents", []))
    out: list[Gtid] = []
    for k in keys:
        blob = c.get_object(Bucket=BUCKET, Key=k)["Body"].read()
        out += [t.gtid for t in binlog.read_segment(blob)[1]]
    return out


def test_point_in_time_recovery_across_failover_switchover_and_s3_loss(
        bed: TestBed, s3: S3Server) -> None:
    env = s3_env(s3, BUCKET, SNAPSHOT_INTERVAL="0", SNAPSHOT_BINLOG_ROTATIONS="0",
                 S3_TIMEOUT="3", BINLOG_ARCHIVE_INTERVAL="1")
    nodes = boot_cluster(bed, 3, **env)
    new_pointer(bed, None)  # the first snapshot: recovery starts from it
    rows: list[Row] = []
    p = primary(nodes)
    i = write(p, 1, 2.5, rows)
    wait_until(lambda: archive(bed).get("node"), timeout=30,
               what="a node to archive the binary log")
    # A second snapshot, taken while the writer runs: restores start from it and skip the
    # archived transactions it holds already, in the middle of a segment.
    taker = next(n for n in nodes if n is not p)
    backup = taker.host.spawn([str(VENV_BIN / "autopilot-mysql"), "backup", "now"],
                              env=taker.env, log="backup-now.log")
    while backup.poll() is None:
        i = write(p, i, 0.5, rows)
    assert backup.returncode == 0, (taker.host.dir / "backup-now.log").read_text()
    second = consul_kv(bed, "service/mysql-snapshots/latest")
    assert second["gtid"], second
    i = write(p, i, 1.0, rows)
    # A failover: the primary's host is killed; the archive follows the new primary's
    # transactions by GTID.
    p.host.kill()
    rest = [n for n in nodes if n is not p]
    p = primary(rest)
    i = write(p, i, 2.5, rows)
    # A switchover to the node that archives: a primary that has a healthy replica gives the
    # archive up, and the other node continues it where it stopped.
    archiver = wait_until(lambda: (a := archive(bed).get("node")) != p.name and a,
                          timeout=60, what="a replica to archive")
    switchover(p, archiver)
    p = primary(rest)
    assert p.name == archiver
    i = write(p, i, 1.5, rows)
    # The bucket unreachable for a while: the archive resumes where it stopped.
    cut = bed.partition([s3.host])
    i = write(p, i, 3.0, rows)
    bed.heal(cut)
    i = write(p, i, 1.5, rows)
    wait_until(lambda: archive(bed).get("node") not in (None, p.name), timeout=60,
               what="the other node to take over the archive")
    i = write(p, i, 2.5, rows)
    # The disaster: a table dropped at a known time, more writes after it.
    drop_before = time.time()
    with p.app() as c, c.cursor() as cur:
        cur.execute("DROP TABLE pitr")
    drop_after = time.time()
    with p.app() as c, c.cursor() as cur:
        cur.execute("CREATE TABLE after_drop (id INT PRIMARY KEY)")
        cur.execute("INSERT INTO after_drop VALUES (1)")
    wait_until(lambda: float(archive(bed).get("checked_at") or 0) > drop_after + 1, timeout=60,
               what="the archive to be complete past the drop")
    live = next(n for n in nodes if n.host.running and n is not p)
    # --to-time one second before the drop: every row committed before, none after.
    point = int(drop_before) - 1
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(point))
    plan = live.host.exec(["env", *[f"{k}={v}" for k, v in live.env.items()],
                           str(VENV_BIN / "autopilot-mysql"), "restore", "--to-time", stamp,
                           "--dry-run"], check=False, timeout=120)
    assert plan.returncode == 0 and f"snapshot {second['id']}" in plan.stdout \
        and "segment" in plan.stdout, plan
    print(plan.stdout)
    print(restore(live, live.host.dir / "by-time", "--to-time", stamp))
    got = restored_ids(live.host.dir / "by-time")
    assert got is not None, "the dropped table is missing from a restore before the drop"
    before = {r[0] for r in rows if r[2] < point}
    after = {r[0] for r in rows if r[1] >= point}
    assert before and after, "the writer did not straddle the point"
    assert before <= got, f"rows committed before the point are missing: {before - got}"
    assert not got & after, f"rows written after the point were restored: {got & after}"
    # --to-gtid a row written after the switchover and the archiver's loss.
    k = len(rows) * 3 // 4
    print(restore(live, live.host.dir / "by-gtid", "--to-gtid", rows[k][3]))
    assert restored_ids(live.host.dir / "by-gtid") == {r[0] for r in rows[:k + 1]}
    # A corrupt segment: the restore stops before it, says so, and leaves the target at the
    # last transaction before it.
    c = s3.client()
    keys = sorted(o["Key"] for o in c.list_objects_v2(Bucket=BUCKET, Prefix="mysql/binlogs/")
                  ["Contents"])
    after_k = int(rows[k][3].split("-")[2])  # the first segment wholly after row k's
    bad = next(key for key in keys if int(key.split("_")[1].split("-")[2]) > after_k)
    original = c.get_object(Bucket=BUCKET, Key=bad)
    blob, meta = original["Body"].read(), original["Metadata"]
    c.put_object(Bucket=BUCKET, Key=bad, Body=blob[:-10] + b"corrupted!")
    out = live.host.exec(["env", *[f"{k}={v}" for k, v in live.env.items()],
                          str(VENV_BIN / "autopilot-mysql"), "restore", "--to-gtid",
                          rows[-1][3], "--target", str(live.host.dir / "stopped")],
                         check=False, timeout=300)
    assert out.returncode != 0 and "stopped before" in out.stderr and "corrupt" in out.stderr, out
    partial = restored_ids(live.host.dir / "stopped")
    assert partial is not None and set(range(1, rows[k][0] + 1)) <= partial < \
        {r[0] for r in rows}
    c.put_object(Bucket=BUCKET, Key=bad, Body=blob, Metadata=meta)
    # --new-cluster: the same point published as the first snapshot of a cluster of its own;
    # its first node starts from it and becomes its primary. This cluster is not touched.
    out = restore(live, live.host.dir / "for-new", "--to-time", stamp, "--new-cluster",
                  "restored")
    assert "new cluster restored" in out, out
    db4 = make_node(bed.add_host("db4"), **{**env, "SERVICE_NAME": "restored"})
    db4.boot()
    db4.wait_http("/primary", 200, timeout=150)
    with db4.app() as c, c.cursor() as cur:
        cur.execute("SELECT id FROM pitr")
        assert {r[0] for r in cur.fetchall()} == got
        cur.execute("SHOW TABLES LIKE 'after_drop'")
        assert cur.fetchone() is None
    assert primary([n for n in nodes if n.host.running]) is p
    with p.app() as c, c.cursor() as cur:
        cur.execute("SHOW TABLES LIKE 'pitr'")
        assert cur.fetchone() is None, "the old cluster was touched"
    # The archive: every transaction once, in order, no gap, across both archivers.
    gtids = chain(s3)
    seqs = [g.seqno for g in gtids]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap or a duplicate"
    assert len({g.server_id for g in gtids}) >= 2, "the archive lacks one primary's transactions"
    assert not archive(bed).get("gaps"), archive(bed)
    # The data at risk, as Prometheus scrapes it from any node.
    families = text_string_to_metric_families(requests.get(p.url("/metrics"), timeout=5).text)
    m = {f.name: f.samples for f in families}
    rpo = m["autopilot_mysql_binlog_archive_complete_age_seconds"][0].value
    assert 0 < rpo < 30, rpo
    assert m["autopilot_mysql_binlog_archive_gaps"][0].value == 0
    assert {s.labels["role"]: s.value for s in m["autopilot_mysql_role"]}["primary"] == 1


def test_point_in_time_recovery_on_galera(bed: TestBed, s3: S3Server) -> None:
    """The same archive on TOPOLOGY=galera: a Synced reader archives (never the writer);
    the write-sets carry one cluster-wide GTID domain, so its log holds every one."""
    env = s3_env(s3, BUCKET, TOPOLOGY="galera", SNAPSHOT_INTERVAL="0",
                 SNAPSHOT_BINLOG_ROTATIONS="0", S3_TIMEOUT="3", BINLOG_ARCHIVE_INTERVAL="1")
    nodes = boot_cluster(bed, 3, timeout=180, **env)
    new_pointer(bed, None, timeout=180)
    p = primary(nodes)
    rows: list[Row] = []
    i = write(p, 1, 3.0, rows)
    archiver = wait_until(lambda: archive(bed).get("node"), timeout=60, what="an archiver")
    assert archiver != p.name, "the Galera writer archives"
    i = write(p, i, 2.0, rows)
    drop_before = time.time()
    with p.app() as c, c.cursor() as cur:
        cur.execute("DROP TABLE pitr")
    drop_after = time.time()
    wait_until(lambda: float(archive(bed).get("checked_at") or 0) > drop_after + 1, timeout=60,
               what="the archive to be complete past the drop")
    reader = next(n for n in nodes if n is not p)
    point = int(drop_before) - 1
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(point))
    print(restore(reader, reader.host.dir / "by-time", "--to-time", stamp))
    got = restored_ids(reader.host.dir / "by-time")
    assert got is not None
    before = {r[0] for r in rows if r[2] < point}
    after = {r[0] for r in rows if r[1] >= point}
    assert before and after and before <= got and not got & after
    # the last row: across every hole Galera left in the sequence numbers
    print(restore(reader, reader.host.dir / "by-gtid", "--to-gtid", rows[-1][3]))
    assert restored_ids(reader.host.dir / "by-gtid") == {r[0] for r in rows}
    # Galera leaves holes in the sequence numbers (no member's log holds them): each GTID
    # once and in order, and the chain's links unbroken.
    seqs = [g.seqno for g in chain(s3)]
    assert seqs == sorted(set(seqs)), "a duplicate or a transaction out of order"
    assert not archive(bed).get("gaps"), archive(bed)
