"""The snapshot schedule's stop rule, without S3 or MariaDB: a snapshot begun on a Galera
reader whose node becomes the writer meanwhile is stopped (mariabackup must not stall the
writer's commits) and is not counted as a failure; a replication replica promoted meanwhile
completes its snapshot; mariabackup is killed within a poll of the stop, not at the upload's
next part."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from autopilot_mysql.backup import snapshot
from autopilot_mysql.backup.scheduler import RETRY_FIRST, SnapshotScheduler, TakeFn
from autopilot_mysql.backup.store import Manifest
from autopilot_mysql.config import SnapshotSettings
from autopilot_mysql.exceptions import SnapshotError
from autopilot_mysql.model import NodeStatus, Role

M = Manifest(id="20260101T000000Z-db1", node="db1", role="replica", primary="db2", gtid="0-1-5",
             binlog_file="", server_version="10.11", started_at=0.0, finished_at=1.0,
             raw_bytes=10, stored_bytes=10, sha256="0" * 64, s3_checksum="x-1")


class FakeConsul:
    """The snapshot lock as Consul holds it: one session at a time; `expire()` ends ours."""

    def __init__(self) -> None:
        self.pointer: dict[str, Any] | None = None
        self.holder: str | None = None
        self.bad: dict[str, dict[str, Any]] = {}
        self.sessions = 0

    def create_snapshot_session(self, node: str, ttl: float = 15) -> str:
        self.sessions += 1
        return f"s{self.sessions}"

    def acquire_snapshot_lock(self, session: str, node: str) -> bool:
        if self.holder is None:
            self.holder = session
        return self.holder == session

    def release_snapshot_lock(self, session: str) -> None:
        if self.holder == session:
            self.holder = None

    def expire(self) -> None:
        self.holder = None

    def renew_session(self, session: str) -> bool:
        return self.holder == session

    def snapshot_pointer(self) -> dict[str, Any] | None:
        return self.pointer

    def set_snapshot_pointer(self, doc: dict[str, Any], session: str) -> bool:
        if self.holder != session:
            return False
        self.pointer = doc
        return True

    def bad_snapshots(self) -> dict[str, dict[str, Any]]:
        return dict(self.bad)

    def forget_bad_snapshot(self, snapshot_id: str) -> None:
        self.bad.pop(snapshot_id, None)


class FakeStore:
    def __init__(self) -> None:
        self.stored: dict[str, Manifest] = {}
        self.deleted: list[str] = []

    def abort_open_uploads(self) -> int:
        return 0

    def put_manifest(self, m: Manifest) -> None:
        self.stored[m.id] = m

    def manifests(self) -> list[Manifest]:
        return sorted(self.stored.values(), key=lambda m: m.id)

    def orphans(self) -> list[str]:
        return []

    def delete(self, snapshot_id: str) -> None:
        self.stored.pop(snapshot_id, None)
        self.deleted.append(snapshot_id)


def scheduler(primary_may: bool, take: TakeFn | None = None, keep: int = 3
              ) -> tuple[SnapshotScheduler, dict[str, NodeStatus], FakeConsul]:
    now = {"st": NodeStatus(node="db1", role=Role.REPLICA, healthy=True, replicating=True,
                            lag=0)}
    consul = FakeConsul()

    def promoted(role: str, progress: Callable[[int], None],
                 should_stop: Callable[[], bool]) -> Manifest:
        now["st"] = replace(now["st"], role=Role.PRIMARY)  # elected while mariabackup runs
        if should_stop():
            raise SnapshotError("snapshot cancelled while mariabackup ran")
        return M

    cfg = SnapshotSettings(bucket="b", endpoint="", prefix="mysql", region="r", access_key="a",
                           secret_key="s", verify_tls=True, timeout=3, interval=0,
                           binlog_rotations=0, keep=keep, keep_days=0, compression_level=3,
                           verify=False)
    s = SnapshotScheduler(cfg, FakeStore(), consul, node="db1",  # type: ignore[arg-type]
                          status=lambda: now["st"], members=lambda: (),
                          primary_binlog=lambda: "", take=take or promoted, verify=None,
                          max_lag=30,
                          stop=threading.Event(), primary_may=primary_may)
    return s, now, consul


def test_a_galera_reader_that_becomes_the_writer_abandons_its_snapshot() -> None:
    s, _, consul = scheduler(primary_may=False)
    assert s.run_once("due", Role.REPLICA) is None
    assert consul.pointer is None, "an abandoned snapshot must not be named by the pointer"
    assert "abandoned" in s.state and "writer" in s.state
    assert s.retry_at == 0.0 and s.backoff == RETRY_FIRST, "abandoning is not a failure"


def test_a_replication_replica_promoted_meanwhile_completes_its_snapshot() -> None:
    s, _, consul = scheduler(primary_may=True)
    assert s.run_once("due", Role.REPLICA) == M
    assert consul.pointer is not None and consul.pointer["id"] == M.id


def test_mariabackup_is_killed_within_a_poll_of_the_stop() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    stop_at = time.monotonic() + 0.3
    stopped = threading.Event()
    t0 = time.monotonic()
    try:
        snapshot._stop_when(lambda: time.monotonic() >= stop_at, proc, stopped)
        assert proc.wait(5) != 0 and stopped.is_set()
        assert time.monotonic() - t0 < 5
    finally:
        proc.kill()
        proc.wait()


def test_a_mariabackup_that_finishes_is_not_flagged_as_stopped() -> None:
    proc = subprocess.Popen(["true"])
    stopped = threading.Event()
    snapshot._stop_when(lambda: False, proc, stopped)
    assert proc.wait(5) == 0 and not stopped.is_set()


def test_a_stop_check_that_raises_lets_the_backup_go_on() -> None:
    proc = subprocess.Popen(["sleep", "0.5"])
    stopped = threading.Event()

    def broken() -> bool:
        raise ConnectionError("Consul unreachable")

    snapshot._stop_when(broken, proc, stopped)  # returns when the backup ends, no traceback
    assert proc.wait(5) == 0 and not stopped.is_set()


def test_a_snapshot_whose_lock_was_lost_is_never_published() -> None:
    """The lock's session expired during the upload: the next holder may have deleted our data
    object as a leftover. The pointer must not move to it, and what we stored goes."""
    holder: list[FakeConsul] = []

    def take(role: str, progress: Callable[[int], None],
             should_stop: Callable[[], bool]) -> Manifest:
        holder[0].expire()  # our session expires while mariabackup streams
        return M

    s, _, consul = scheduler(primary_may=True, take=take)
    holder.append(consul)
    consul.pointer = {"id": "20250101T000000Z-db2"}
    assert s.run_once("due", Role.REPLICA, force=True) is None
    assert consul.pointer == {"id": "20250101T000000Z-db2"}, "the pointer moved"
    store = s.store
    assert isinstance(store, FakeStore)
    assert M.id in store.deleted and M.id not in store.stored
    assert "lost the snapshot lock" in s.problem


def test_a_failed_snapshot_is_reported_until_one_succeeds() -> None:
    calls = []

    def take(role: str, progress: Callable[[int], None],
             should_stop: Callable[[], bool]) -> Manifest:
        calls.append(1)
        if len(calls) == 1:
            raise SnapshotError("cannot start the snapshot upload: InvalidAccessKeyId")
        return M

    s, _, consul = scheduler(primary_may=True, take=take)
    assert s.run_once("due", Role.REPLICA) is None
    assert "InvalidAccessKeyId" in s.problem
    assert s.run_once("due", Role.REPLICA) == M
    assert s.problem == ""


def test_retention_deletes_bad_snapshots_and_does_not_count_them() -> None:
    old_good = replace(M, id="20260101T000000Z-db2", finished_at=0.0)
    bad = replace(M, id="20260101T000001Z-db3", finished_at=0.0)
    newest = replace(M, id="20260102T000000Z-db1")

    def take(role: str, progress: Callable[[int], None],
             should_stop: Callable[[], bool]) -> Manifest:
        return newest

    s, _, consul = scheduler(primary_may=True, take=take, keep=2)
    store = s.store
    assert isinstance(store, FakeStore)
    for m in (old_good, bad):
        store.put_manifest(m)
    consul.bad = {bad.id: {"why": "its data object is missing"},
                  "20250101T000000Z-gone": {"why": "gone already"}}
    assert s.run_once("due", Role.REPLICA) == newest
    assert set(store.stored) == {old_good.id, newest.id}, "keep=2 counts good snapshots only"
    assert consul.bad == {}, "the marks of deleted snapshots are forgotten"
