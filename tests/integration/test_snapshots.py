"""Snapshots on the test bed: real MinIO, real Consul, real MariaDB and mariabackup.

One cluster goes through the life of its snapshots (first snapshot, rotation trigger on a
replica, a new node started from a snapshot after the primary purged its binary logs, the lock
holder killed mid-snapshot, S3 partitioned mid-upload); another shows a corrupt snapshot refused
and an errant former primary rebuilt from a snapshot.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import zlib
from typing import Any

import pytest
import requests

from tests.integration.test_replication import has_rows, ids, insert, primary, roles
from tests.testbed.bed import TestBed
from tests.testbed.cluster import VENV_BIN, Node, boot_cluster, make_node, s3_env
from tests.testbed.components import S3Server
from tests.testbed.util import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BUCKET = "snapshots"
ROOT = "mysql/snapshots/"


def consul_kv(bed: TestBed, key: str) -> Any:
    r = requests.get(f"http://{bed.hosts['consul'].ip}:8500/v1/kv/{key}", timeout=3)
    if r.status_code == 404:
        return None
    r.raise_for_status()
    item = r.json()[0]
    if not item.get("Value") or (key.endswith("/lock") and not item.get("Session")):
        return None
    import base64
    return json.loads(base64.b64decode(item["Value"]))


def pointer(bed: TestBed) -> dict[str, Any] | None:
    value: dict[str, Any] | None = consul_kv(bed, "service/mysql-snapshots/latest")
    return value


def lock_holder(bed: TestBed) -> str | None:
    v = consul_kv(bed, "service/mysql-snapshots/lock")
    return str(v["node"]) if v else None


def new_pointer(bed: TestBed, old: str | None, timeout: float = 120) -> dict[str, Any]:
    return wait_until(lambda: (p := pointer(bed)) and p["id"] != old and p,  # type: ignore
                      timeout=timeout, what=f"a snapshot newer than {old}")


def objects(s3: S3Server) -> set[str]:
    r = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=ROOT)
    return {o["Key"][len(ROOT):] for o in r.get("Contents", [])}


def open_uploads(s3: S3Server) -> list[Any]:
    return list(s3.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) or [])


def rotate(node: Node) -> None:
    with node.root() as c, c.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")


def fill(node: Node, mib: int) -> None:
    """Incompressible rows, so uploads take a measurable time on a throttled link."""
    with node.app() as c, c.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS blob_t (id INT AUTO_INCREMENT PRIMARY KEY, "
                    "b LONGBLOB) ENGINE=InnoDB")
        for _ in range(mib * 4):
            cur.execute("INSERT INTO blob_t (b) VALUES (%s)", (os.urandom(256 << 10),))


def cli(node: Node, *args: str) -> subprocess.Popen[bytes]:
    """`autopilot-mysql ARGS` inside the node's host, with its environment."""
    return node.host.spawn([str(VENV_BIN / "autopilot-mysql"), *args], env=node.env,
                           log="cli.log")


def test_snapshot_life_cycle(bed: TestBed, s3: S3Server) -> None:
    env = s3_env(s3, BUCKET, SNAPSHOT_INTERVAL="0", SNAPSHOT_BINLOG_ROTATIONS="1",
                 S3_TIMEOUT="3", SNAPSHOT_KEEP="2", SNAPSHOT_KEEP_DAYS="0")
    nodes = boot_cluster(bed, 3, **env)
    # 1. The first snapshot is taken as soon as the cluster exists; the pointer names it.
    first = new_pointer(bed, None)
    assert {f"{first['id']}/manifest.json", f"{first['id']}/data.xbstream.zst"} <= objects(s3)
    manifest = json.loads(s3.client().get_object(
        Bucket=BUCKET, Key=f"{ROOT}{first['id']}/manifest.json")["Body"].read())
    assert manifest["gtid"] == first["gtid"] and len(manifest["sha256"]) == 64
    assert manifest["stored_bytes"] < manifest["raw_bytes"]  # compressed
    # 2. Data, then a binary-log rotation on the primary: a healthy replica takes the next.
    p = primary(nodes)
    acked = set(insert(p, 1, 50))
    fill(p, 4)
    rotate(p)
    second = new_pointer(bed, first["id"])
    assert second["node"] != p.name, "the snapshot should be taken on a replica"
    # 3. The primary purges every binary log but the current one; more writes follow.
    with p.root() as c, c.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        current = cur.fetchone()[0]
        cur.execute(f"PURGE BINARY LOGS TO '{current}'")
        cur.execute("SHOW BINARY LOGS")
        assert [r[0] for r in cur.fetchall()] == [current]
    acked |= set(insert(p, 100, 20))
    # 4. A fourth node starts from the snapshot and replicates from there.
    db4 = make_node(bed.add_host("db4"), **env)
    db4.boot()
    db4.wait_http("/replica", 200, timeout=120)
    assert f"restoring snapshot {second['id']}" in db4.log.read_text()
    acked |= set(insert(p, 200, 10))
    wait_until(lambda: has_rows(db4, acked), timeout=30, what="every row on db4")
    with db4.app() as c, c.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM blob_t")
        assert cur.fetchone()[0] == 16
    nodes.append(db4)
    # 5. The node holding the snapshot lock dies mid-snapshot: the lock goes with it.
    victim = next(n for n in nodes if n is not p and n is not db4)
    victim.host.throttle("8mbit", burst="64kbit")
    cli(victim, "backup", "now")
    wait_until(lambda: lock_holder(bed) == victim.name, timeout=30,
               what=f"{victim.name} to hold the snapshot lock")
    victim.host.kill()
    wait_until(lambda: lock_holder(bed) is None, timeout=30,
               what="the dead node's snapshot lock to be released")
    before = pointer(bed)
    rotate(p)
    third = new_pointer(bed, before["id"] if before else None)
    assert third["node"] not in (victim.name, p.name)
    assert open_uploads(s3) == [], "the dead node's multipart upload was not aborted"
    # 6. S3 partitioned mid-upload: the snapshot fails cleanly; the next one succeeds.
    live = [n for n in nodes if n.host.running]
    for n in live:
        n.host.throttle("8mbit", burst="64kbit")
    rotate(p)
    holder = wait_until(lambda: lock_holder(bed), timeout=30, what="a snapshot to start")
    bed.partition([s3.host])
    holder_node = next(n for n in live if n.name == holder)
    wait_until(lambda: "snapshot FAILED" in holder_node.log.read_text(), timeout=90,
               what=f"{holder} to report the failed snapshot")
    assert pointer(bed)["id"] == third["id"], "the pointer moved on a failed snapshot"
    assert "still names the previous snapshot" in holder_node.log.read_text()
    assert all(n.http("/health") == 200 for n in live), "a snapshot failure failed a check"
    bed.heal()
    for n in live:
        n.host.unthrottle()
    fourth = new_pointer(bed, third["id"], timeout=180)
    assert open_uploads(s3) == []
    assert roles(live).count("primary") == 1
    # Retention: SNAPSHOT_KEEP=2 and no age floor: only the two newest remain.
    kept = {k.split("/")[0] for k in objects(s3)}
    assert fourth["id"] in kept and len(kept) == 2, kept


def test_corrupt_snapshot_refused_and_errant_node_rebuilt(bed: TestBed, s3: S3Server) -> None:
    env = s3_env(s3, BUCKET, SNAPSHOT_INTERVAL="0", SNAPSHOT_BINLOG_ROTATIONS="1",
                 S3_TIMEOUT="3")
    nodes = boot_cluster(bed, 3, **env)
    first = new_pointer(bed, None)
    p = primary(nodes)
    acked = set(insert(p, 1, 30))
    rotate(p)
    good = new_pointer(bed, first["id"])
    # `backup verify` restores it into scratch and opens it in a throwaway mysqld.
    replica = next(n for n in nodes if n is not p)
    out = replica.host.exec(["env", *[f"{k}={v}" for k, v in replica.env.items()],
                             str(VENV_BIN / "autopilot-mysql"), "backup", "verify", "latest"],
                            timeout=120)
    assert f"snapshot {good['id']} OK" in out.stdout and good["gtid"] in out.stdout, out
    listing = replica.host.exec(["env", *[f"{k}={v}" for k, v in replica.env.items()],
                                 str(VENV_BIN / "autopilot-mysql"), "backup", "list"]).stdout
    assert f"{good['id']}" in listing and "<- latest" in listing, listing
    # A former primary with an errant transaction (written as root while partitioned away).
    bed.partition([p.host])
    rest = [n for n in nodes if n is not p]
    new = primary(rest)
    wait_until(lambda: p.status()["writable"] is False, timeout=15, what="the old primary "
               "to fence itself")
    with p.root() as c, c.cursor() as cur:
        cur.execute("INSERT INTO app.t VALUES (777, 0)")
    acked |= set(insert(new, 1000, 5))
    bed.heal()
    # It is rebuilt from the snapshot automatically and rejoins without the errant row.
    wait_until(lambda: "RE-PROVISIONING this node" in p.log.read_text(), timeout=90,
               what=f"{p.name} to start rebuilding")
    p.wait_http("/replica", 200, timeout=120)
    assert f"re-provisioned from snapshot {good['id']}" in p.log.read_text()
    wait_until(lambda: has_rows(p, acked), timeout=30, what="every acknowledged row on it")
    assert 777 not in ids(p)
    assert not (p.datadir / "#autopilot-aside").exists()


def truncate(s3: S3Server, snapshot_id: str) -> None:
    key = f"{ROOT}{snapshot_id}/data.xbstream.zst"
    blob = s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=blob[: len(blob) // 2])


def test_snapshots_heal_themselves(bed: TestBed, s3: S3Server) -> None:
    """Issue 13, 5: the latest snapshot's object deleted, then a node added: the snapshot is
    marked bad, the node starts from the newest good one and becomes a replica, and a new
    snapshot replaces the bad one at once (retention then deletes it). Every snapshot
    truncated: the next node copies a live replica instead of waiting."""
    env = s3_env(s3, BUCKET, SNAPSHOT_INTERVAL="0", SNAPSHOT_BINLOG_ROTATIONS="1",
                 S3_TIMEOUT="3", SNAPSHOT_KEEP="5")
    nodes = boot_cluster(bed, 3, **env)
    first = new_pointer(bed, None)
    p = primary(nodes)
    acked = set(insert(p, 1, 30))
    rotate(p)
    second = new_pointer(bed, first["id"])
    s3.client().delete_object(Bucket=BUCKET, Key=f"{ROOT}{second['id']}/data.xbstream.zst")
    acked |= set(insert(p, 100, 10))
    db4 = make_node(bed.add_host("db4"), **env)
    db4.boot()
    db4.wait_http("/replica", 200, timeout=150)
    log4 = db4.log.read_text()
    assert f"snapshot {second['id']} is unusable and is marked bad" in log4, log4[-3000:]
    assert f"restoring snapshot {first['id']}" in log4
    wait_until(lambda: has_rows(db4, acked), timeout=30, what="every acknowledged row on db4")
    third = wait_until(lambda: (q := pointer(bed)) and q["id"] > second["id"]
                       and not q.get("bad") and q, timeout=120,
                       what="a new good snapshot to replace the bad one")
    wait_until(lambda: not any(k.startswith(second["id"]) for k in objects(s3)), timeout=30,
               what="retention to delete the bad snapshot")
    # SNAPSHOT_VERIFY is on by default: the node that took it read it back before naming it,
    # in scratch space on its data volume that mysqld never listed as a database.
    taker = next(n for n in nodes + [db4] if n.name == third["node"])
    assert f"snapshot verification: snapshot {third['id']} OK" in taker.log.read_text()
    assert not (taker.datadir / "#autopilot-verify").exists() or not any(
        (taker.datadir / "#autopilot-verify").iterdir())
    assert consul_kv(bed, f"service/mysql-snapshots/bad/{second['id']}") is None
    nodes.append(db4)
    # `backup list` on a node shows the good ones; the CLI refuses a truncated snapshot and
    # marks it bad.
    truncate(s3, third["id"])
    target = db4.host.dir / "restore-here"
    proc = db4.host.exec(["env", *[f"{k}={v}" for k, v in db4.env.items()],
                          str(VENV_BIN / "autopilot-mysql"), "backup", "restore", "latest",
                          "--target", str(target)], check=False, timeout=120)
    assert proc.returncode != 0 and "corrupt" in proc.stdout + proc.stderr, proc
    assert not target.exists()
    assert consul_kv(bed, f"service/mysql-snapshots/bad/{third['id']}") is not None
    fourth = wait_until(lambda: (q := pointer(bed)) and q["id"] > third["id"]
                        and not q.get("bad") and q, timeout=120,
                        what="a new snapshot to replace the one the CLI found corrupt")
    assert f"{fourth['id']}/manifest.json" in objects(s3)
    # Every snapshot left is truncated: a fifth node copies a live replica.
    for key in objects(s3):
        if key.endswith("/data.xbstream.zst"):
            truncate(s3, key.split("/")[0])
    acked |= set(insert(p, 200, 10))
    db5 = make_node(bed.add_host("db5"), **env)
    db5.boot()
    db5.wait_http("/replica", 200, timeout=180)
    log5 = db5.log.read_text()
    assert "no usable snapshot, copying" in log5, log5[-3000:]
    wait_until(lambda: has_rows(db5, acked), timeout=30, what="every acknowledged row on db5")
    wait_until(lambda: (q := pointer(bed)) and q["id"] > fourth["id"] and not q.get("bad"),
               timeout=120, what="a new good snapshot")
    assert roles(nodes + [db5]).count("primary") == 1


def test_the_store_sends_crc32_parts_the_server_checks_and_signs_no_payload(
        bed: TestBed, s3: S3Server) -> None:
    """The data object goes up in CRC32-checked parts with unsigned payloads (one SHA-256 pass
    less per part on our side and on the server's): the server's composite checksum is read
    back and equals ours, the whole object's SHA-256 in the manifest checks the download, a
    part whose CRC32 does not match its bytes is refused by the server (the check that stands
    in for the payload signature), and a manifest goes up with a checksum too."""
    import hashlib
    import io
    import time as _time

    from botocore.exceptions import ClientError

    from autopilot_mysql.backup.store import MIN_PART, Manifest, SnapshotStore
    from autopilot_mysql.config import SnapshotSettings

    s3.client().create_bucket(Bucket=BUCKET)
    cfg = SnapshotSettings(
        bucket=BUCKET, endpoint=s3.endpoint, prefix="mysql", region=s3.region,
        access_key=s3.access_key, secret_key=s3.secret_key, verify_tls=True, timeout=30,
        interval=0, binlog_rotations=0, keep=3, keep_days=0, compression_level=3, verify=True)
    store = SnapshotStore(cfg)
    sent: list[dict[str, str]] = []
    store.client.meta.events.register(  # what goes on the wire, after signing
        "before-send.s3.*", lambda request, **_: sent.append(
            {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}))
    data = os.urandom(2 * MIN_PART + 12345)  # three parts
    stored = store.upload("crc-test", io.BytesIO(data))
    assert stored.size == len(data) and stored.sha256 == hashlib.sha256(data).hexdigest()
    head = s3.client().head_object(Bucket=BUCKET, Key=store.key("crc-test", "data.xbstream.zst"),
                                   ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32") == stored.s3_checksum and stored.s3_checksum.endswith("-3")
    parts = [h for h in sent if "x-amz-checksum-crc32" in {k.lower() for k in h}]
    assert len(parts) == 3, sent
    assert all(h.get("X-Amz-Content-SHA256") == "UNSIGNED-PAYLOAD" for h in parts), parts
    m = Manifest(id="crc-test", node="db1", role="replica", primary="db1", gtid="0-1-1",
                 binlog_file="mysql-bin.000001", server_version="10.11", started_at=_time.time(),
                 finished_at=_time.time(), raw_bytes=len(data), stored_bytes=stored.size,
                 sha256=stored.sha256, s3_checksum=stored.s3_checksum)
    out = io.BytesIO()
    store.download(m, out)
    assert out.getvalue() == data
    sent.clear()
    store.put_manifest(m)
    assert any("x-amz-checksum-crc32" in {k.lower() for k in h} for h in sent), sent
    # the server checks each part's CRC32 against its bytes
    upload = store.client.create_multipart_upload(Bucket=BUCKET, Key="mysql/x",
                                                  ChecksumAlgorithm="CRC32")["UploadId"]
    wrong = base64.b64encode((zlib.crc32(data[:MIN_PART]) ^ 1).to_bytes(4, "big")).decode()
    with pytest.raises(ClientError) as refused:
        store.client.upload_part(Bucket=BUCKET, Key="mysql/x", UploadId=upload, PartNumber=1,
                                 Body=data[:MIN_PART], ChecksumCRC32=wrong)
    assert refused.value.response["Error"]["Code"] in ("BadDigest", "InvalidDigest",
                                                       "XAmzContentChecksumMismatch"), \
        refused.value.response
    store.abort("mysql/x", upload)
