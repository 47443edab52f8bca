"""Snapshots that heal themselves, without S3 or Consul: a missing or corrupt data object is
told apart from a local failure (only the first marks a snapshot bad), the pointer's snapshot
marked bad makes a new one due at once, and the snapshots a new node tries come best first,
never a bad one."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import pytest
from botocore.exceptions import ClientError

from autopilot_mysql.backup import policy
from autopilot_mysql.backup.store import Manifest, SnapshotStore
from autopilot_mysql.config import load_settings
from autopilot_mysql.exceptions import SnapshotCorrupt, SnapshotError
from autopilot_mysql.snapshots import Snapshots

DATA = b"compressed snapshot bytes " * 1000
M = Manifest(id="20260102T000000Z-db1", node="db1", role="replica", primary="db2",
             gtid="0-1-5", binlog_file="mysql-bin.000002", server_version="10.11",
             started_at=0.0, finished_at=1.0, raw_bytes=len(DATA) * 3, stored_bytes=len(DATA),
             sha256=__import__("hashlib").sha256(DATA).hexdigest(), s3_checksum="x-1")
SETTINGS = load_settings({"MARIADB_ROOT_PASSWORD": "x", "MYSQL_REPL_PASSWORD": "y",
                          "S3_BUCKET": "snaps", "S3_ENDPOINT": "http://127.0.0.1:1",
                          "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})


class FakeS3:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 (boto3's)
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key])}


def store(objects: dict[str, bytes]) -> SnapshotStore:
    assert SETTINGS.snapshots is not None
    s = SnapshotStore(SETTINGS.snapshots, client=FakeS3(objects))
    return s


class BrokenSink(io.RawIOBase):
    """zstd that refused the stream: every write fails as a closed pipe does."""

    def write(self, b: Any) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def data_key(s: SnapshotStore, m: Manifest) -> str:
    return s.key(m.id, "data.xbstream.zst")


def test_a_missing_data_object_is_corrupt_not_an_s3_outage() -> None:
    s = store({})
    with pytest.raises(SnapshotCorrupt) as e:
        s.download(M, io.BytesIO())
    assert "missing" in str(e.value) and "lifecycle" in str(e.value)


def test_a_truncated_object_is_corrupt() -> None:
    s = store({})
    s.client.objects[data_key(s, M)] = DATA[: len(DATA) // 2]
    with pytest.raises(SnapshotCorrupt, match="is corrupt"):
        s.download(M, io.BytesIO())


def test_a_failing_extraction_of_an_intact_object_is_not_corrupt() -> None:
    s = store({})
    s.client.objects[data_key(s, M)] = DATA
    sink: IO[bytes] = BrokenSink()  # type: ignore[assignment]
    with pytest.raises(SnapshotError) as e:
        s.download(M, sink, chunk=1000)
    assert not isinstance(e.value, SnapshotCorrupt)
    assert "intact" in str(e.value)


def test_a_failing_extraction_of_a_corrupt_object_is_corrupt() -> None:
    s = store({})
    s.client.objects[data_key(s, M)] = b"X" + DATA[1:]
    sink: IO[bytes] = BrokenSink()  # type: ignore[assignment]
    with pytest.raises(SnapshotCorrupt):
        s.download(M, sink, chunk=1000)


def test_a_bad_pointer_makes_a_snapshot_due_at_once() -> None:
    pointer = {"id": M.id, "finished_at": 10**9, "primary": "db2",
               "binlog_file": "mysql-bin.000002"}
    assert policy.snapshot_due(pointer, now=10**9 + 1, interval=86400, rotations=4,
                               primary="db2", primary_binlog="mysql-bin.000002") is None
    why = policy.snapshot_due({**pointer, "bad": "its data object is missing"}, now=10**9 + 1,
                              interval=86400, rotations=4, primary="db2",
                              primary_binlog="mysql-bin.000002")
    assert why is not None and M.id in why and "missing" in why


class FakeConsul:
    def __init__(self, pointer: dict[str, Any] | None, bad: dict[str, dict[str, Any]]) -> None:
        self.pointer = pointer
        self.bad = bad

    def snapshot_pointer(self) -> dict[str, Any] | None:
        return self.pointer

    def bad_snapshots(self) -> dict[str, dict[str, Any]]:
        return dict(self.bad)

    def mark_snapshot_bad(self, snapshot_id: str, why: str, node: str) -> None:
        self.bad[snapshot_id] = {"why": why, "by": node}
        if self.pointer and self.pointer["id"] == snapshot_id:
            self.pointer = {**self.pointer, "bad": why}


class FakeStore:
    def __init__(self, ms: list[Manifest]) -> None:
        self.ms = ms

    def manifests(self) -> list[Manifest]:
        return sorted(self.ms, key=lambda m: m.id)


def snapshots(consul: FakeConsul, ms: list[Manifest]) -> Snapshots:
    return Snapshots(SETTINGS, consul, cnf=Path("/nonexistent/my.cnf"),  # type: ignore[arg-type]
                     store=FakeStore(ms))  # type: ignore[arg-type]


def test_usable_snapshots_come_pointer_first_then_newest_never_bad() -> None:
    a, b, c = (replace(M, id=f"2026010{i}T000000Z-db1") for i in (1, 2, 3))
    # the pointer names b (c was written but its pointer write failed); a is bad
    snaps = snapshots(FakeConsul({"id": b.id}, {a.id: {"why": "corrupt"}}), [a, b, c])
    usable, any_snapshot = snaps.usable()
    assert [m.id for m in usable] == [b.id, c.id] and any_snapshot
    # once b is marked bad, c is first; the problem is shown until a newer snapshot
    snaps.mark_bad(b.id, "its data object is missing")
    assert [m.id for m in snaps.usable()[0]] == [c.id]
    assert b.id in snaps.problem and "missing" in snaps.problem


def test_a_pointer_to_a_vanished_snapshot_is_marked_bad() -> None:
    a = replace(M, id="20260101T000000Z-db1")
    consul = FakeConsul({"id": "20260105T000000Z-db3"}, {})
    usable, any_snapshot = snapshots(consul, [a]).usable()
    assert [m.id for m in usable] == [a.id] and any_snapshot
    assert "20260105T000000Z-db3" in consul.bad
    assert consul.pointer is not None and consul.pointer.get("bad")


def test_every_snapshot_bad_and_none_at_all_are_told_apart() -> None:
    a = replace(M, id="20260101T000000Z-db1")
    assert snapshots(FakeConsul({"id": a.id, "bad": "x"}, {a.id: {}}), [a]).usable() \
        == ([], True)
    assert snapshots(FakeConsul(None, {}), []).usable() == ([], False)


def test_identifiers_are_quoted_for_the_row_count() -> None:
    from autopilot_mysql.snapshots import _quote
    assert _quote("a`b") == "`a``b`" and _quote("plain") == "`plain`"


def test_a_verification_never_fills_the_data_volume(tmp_path: Path) -> None:
    """No room for a second copy above DISK_MIN_FREE: not verified, and said; the CLI
    refuses instead."""
    s = replace(SETTINGS, datadir=tmp_path)
    snaps = Snapshots(s, FakeConsul(None, {}), cnf=tmp_path / "my.cnf",  # type: ignore[arg-type]
                      store=FakeStore([]))  # type: ignore[arg-type]
    huge = replace(M, raw_bytes=1 << 60)
    text = snaps.verify(huge)
    assert "NOT verified" in text and "DISK_MIN_FREE" in text
    with pytest.raises(SnapshotError, match="NOT verified"):
        snaps.verify(huge, skip_when_short=False)
    assert not (tmp_path / "#autopilot-verify").exists()
