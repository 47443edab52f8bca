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
from autopilot_mysql.backup.scheduler import RETRY_FIRST, SnapshotScheduler
from autopilot_mysql.backup.store import Manifest
from autopilot_mysql.config import SnapshotSettings
from autopilot_mysql.exceptions import SnapshotError
from autopilot_mysql.model import NodeStatus, Role

M = Manifest(id="20260101T000000Z-db1", node="db1", role="replica", primary="db2", gtid="0-1-5",
             binlog_file="", server_version="10.11", started_at=0.0, finished_at=1.0,
             raw_bytes=10, stored_bytes=10, sha256="0" * 64, s3_checksum="x-1")


class FakeConsul:
    def __init__(self) -> None:
        self.pointer: dict[str, Any] | None = None

    def create_snapshot_session(self, node: str, ttl: float = 15) -> str:
        return "s1"

    def acquire_snapshot_lock(self, session: str, node: str) -> bool:
        return True

    def release_snapshot_lock(self, session: str) -> None:
        pass

    def renew_session(self, session: str) -> bool:
        return True

    def snapshot_pointer(self) -> dict[str, Any] | None:
        return self.pointer

    def set_snapshot_pointer(self, doc: dict[str, Any]) -> None:
        self.pointer = doc


class FakeStore:
    def abort_open_uploads(self) -> int:
        return 0

    def put_manifest(self, m: Manifest) -> None:
        pass

    def manifests(self) -> list[Manifest]:
        return []

    def orphans(self) -> list[str]:
        return []


def scheduler(primary_may: bool) -> tuple[SnapshotScheduler, dict[str, NodeStatus], FakeConsul]:
    now = {"st": NodeStatus(node="db1", role=Role.REPLICA, healthy=True, replicating=True,
                            lag=0)}
    consul = FakeConsul()

    def take(role: str, progress: Callable[[int], None],
             should_stop: Callable[[], bool]) -> Manifest:
        now["st"] = replace(now["st"], role=Role.PRIMARY)  # elected while mariabackup runs
        if should_stop():
            raise SnapshotError("snapshot cancelled while mariabackup ran")
        return M

    cfg = SnapshotSettings(bucket="b", endpoint="", prefix="mysql", region="r", access_key="a",
                           secret_key="s", verify_tls=True, timeout=3, interval=0,
                           binlog_rotations=0, keep=3, keep_days=7, compression_level=3,
                           verify=False)
    s = SnapshotScheduler(cfg, FakeStore(), consul, node="db1",  # type: ignore[arg-type]
                          status=lambda: now["st"], members=lambda: (),
                          primary_binlog=lambda: "", take=take, verify=None, max_lag=30,
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
