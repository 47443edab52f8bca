"""Snapshot decisions without S3 or Consul: when one is due, which node takes it, what
retention deletes; and the parsing of what mariabackup and the bucket hand back."""

from __future__ import annotations

import json

import pytest

from autopilot_mysql.backup import policy
from autopilot_mysql.backup.snapshot import parse_backup_info
from autopilot_mysql.backup.store import Manifest, _composite, _read_full
from autopilot_mysql.config import load_settings
from autopilot_mysql.exceptions import ConfigError
from autopilot_mysql.model import Member, NodeStatus, Role

DAY = 86400.0


def manifest(i: int, finished: float) -> Manifest:
    return Manifest(id=f"2026010{i}T000000Z-db1", node="db1", role="replica", primary="db2",
                    gtid=f"0-1-{i}", binlog_file="mysql-bin.000001", server_version="10.11",
                    started_at=finished - 10, finished_at=finished, raw_bytes=100,
                    stored_bytes=10, sha256="0" * 64, s3_checksum="x-1")


def test_due_first_interval_and_rotations() -> None:
    now = 1_000_000.0
    assert "no snapshot" in str(policy.snapshot_due(None, now=now, interval=0, rotations=0,
                                                    primary="db1", primary_binlog=""))
    ptr = {"finished_at": now - 3600, "primary": "db1", "binlog_file": "mysql-bin.000007"}
    assert policy.snapshot_due(ptr, now=now, interval=7200, rotations=4, primary="db1",
                               primary_binlog="mysql-bin.000010") is None
    assert "rotated 4 times" in str(policy.snapshot_due(
        ptr, now=now, interval=7200, rotations=4, primary="db1",
        primary_binlog="mysql-bin.000011"))
    assert "1.0h old" in str(policy.snapshot_due(ptr, now=now, interval=3600, rotations=0,
                                                 primary="db1", primary_binlog=""))
    # Another primary's binary logs are numbered on their own: no comparison.
    assert policy.snapshot_due(ptr, now=now, interval=0, rotations=1, primary="db3",
                               primary_binlog="mysql-bin.000099") is None


def test_eligible_replica_first_primary_alone() -> None:
    replica = NodeStatus(node="db2", role=Role.REPLICA, healthy=True, replicating=True, lag=0)
    assert policy.eligible(replica, (), 10) == "a healthy replica"
    assert policy.eligible(NodeStatus(node="db2", role=Role.REPLICA, healthy=True,
                                      replicating=True, lag=50), (), 10) is None
    assert policy.eligible(NodeStatus(node="db2", role=Role.REPLICA, healthy=False,
                                      replicating=True, lag=0), (), 10) is None
    prim = NodeStatus(node="db1", role=Role.PRIMARY, healthy=True, writable=True)
    other = Member(node="db2", service_id="mysql-db2", address="10.0.0.2", port=3306,
                   passing=True)
    assert policy.eligible(prim, (other,), 10) is None
    failing = Member(node="db2", service_id="mysql-db2", address="10.0.0.2", port=3306,
                     passing=False)
    assert "no healthy replica" in str(policy.eligible(prim, (failing,), 10))
    # A Galera writer never (mariabackup desyncs it), even alone; its readers as usual
    assert policy.eligible(prim, (failing,), 10, primary_may=False) is None
    assert policy.eligible(replica, (), 10, primary_may=False) == "a healthy replica"


def test_retention_keeps_newest_young_and_the_pointer() -> None:
    now = 100 * DAY
    ms = [manifest(i, now - (10 - i) * DAY) for i in range(1, 10)]  # 9 to 1 days old
    gone = {m.id for m in policy.to_delete(ms, now=now, keep=3, keep_days=4, latest=ms[-1].id)}
    # the newest 3 kept (1-3 days old); the rest are not younger than 4 days: deleted
    assert gone == {m.id for m in ms[:6]}
    gone = {m.id for m in policy.to_delete(ms, now=now, keep=1, keep_days=5.5,
                                           latest=ms[-1].id)}
    assert gone == {m.id for m in ms[:4]}  # 9-6 days old; 5 days and younger kept
    # never the one the pointer names, even if old, and never the only one
    gone = {m.id for m in policy.to_delete(ms, now=now, keep=1, keep_days=0, latest=ms[0].id)}
    assert ms[0].id not in gone and ms[-1].id not in gone
    assert policy.to_delete(ms[:1], now=now, keep=1, keep_days=0, latest=None) == []


def test_backup_info_and_manifest_round_trip() -> None:
    info = parse_backup_info("server_version = 10.11.19-MariaDB-log\nbinlog_pos = filename "
                             "'mysql-bin.000003', position '780', GTID of the last change "
                             "'0-7-3,1-2-9'\n")
    assert info == {"gtid": "0-7-3,1-2-9", "binlog_file": "mysql-bin.000003",
                    "version": "10.11.19-MariaDB-log"}
    m = manifest(1, 5.0)
    assert Manifest.from_json(m.to_json()) == m
    with pytest.raises(ValueError, match="missing"):
        Manifest.from_json('{"id": "x"}')
    # a manifest written before Galera snapshots existed reads as a replication one
    old = json.loads(m.to_json())
    del old["galera_uuid"]
    assert Manifest.from_json(json.dumps(old)).galera_uuid == ""
    # S3's COMPOSITE CRC32: the CRC32 of the parts' CRC32s (the server's own answer is compared
    # after every upload; tests/integration/test_snapshots.py)
    import base64
    import zlib
    parts = [zlib.crc32(b"a").to_bytes(4, "big"), zlib.crc32(b"b").to_bytes(4, "big")]
    want = base64.b64encode(zlib.crc32(parts[0] + parts[1]).to_bytes(4, "big")).decode()
    assert _composite(parts) == f"{want}-2"


def test_read_full_collects_short_reads() -> None:
    class Pipe:
        def __init__(self) -> None:
            self.chunks = [b"ab", b"c", b"defg", b""]

        def read(self, n: int) -> bytes:
            return self.chunks.pop(0)[:n] if self.chunks else b""

    assert _read_full(Pipe(), 5) == b"abcde"  # type: ignore[arg-type]


def test_snapshot_settings() -> None:
    base = {"MARIADB_ROOT_PASSWORD": "x", "MYSQL_REPL_PASSWORD": "y"}
    assert load_settings(base).snapshots is None
    s = load_settings({**base, "S3_BUCKET": "snaps", "S3_ENDPOINT": "http://minio:9000",
                       "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    assert s.snapshots is not None and s.snapshots.prefix == "mysql"
    assert s.redacted()["snapshots"]["secret_key"] == "<set>"  # type: ignore[index]
    with pytest.raises(ConfigError) as e:
        load_settings({**base, "S3_ENDPOINT": "http://minio:9000"})
    assert "S3_BUCKET: is required" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_settings({**base, "S3_BUCKET": "Bad_Bucket", "AWS_ACCESS_KEY_ID": "k",
                       "SNAPSHOT_COMPRESSION_LEVEL": "30"})
    text = str(e.value)
    assert "S3_BUCKET" in text and "AWS_SECRET_ACCESS_KEY" in text
    assert "SNAPSHOT_COMPRESSION_LEVEL" in text
