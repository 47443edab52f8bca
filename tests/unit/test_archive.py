"""The binary-log archiver without MariaDB, S3 or Consul: synthetic binary log files on disk
(MariaDB's event layout), a fake lock and state with Consul's check-and-set semantics. The
archive continues on another node by GTID with no duplicate, records a gap when the new
node's log cannot continue it, waits for a node that is behind, and never writes once its
lock is gone."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from autopilot_mysql.backup import binlog
from autopilot_mysql.backup.archive import BinlogArchiver
from autopilot_mysql.backup.binlog import ROTATE
from autopilot_mysql.backup.store import Segment
from autopilot_mysql.config import SnapshotSettings
from autopilot_mysql.exceptions import DCSError
from autopilot_mysql.gtid import Gtid
from autopilot_mysql.model import NodeStatus, Role
from tests.unit.test_pitr import FDE, event, tx

CFG = SnapshotSettings(bucket="b", endpoint="", prefix="p", region="", access_key="",
                       secret_key="", verify_tls=True, timeout=3, interval=0,
                       binlog_rotations=0, keep=3, keep_days=0, compression_level=3,
                       verify=False, archive_interval=1)


class FakeConsul:
    def __init__(self) -> None:
        self.holder: str | None = None
        self.index = 0
        self.state: dict[str, Any] | None = None
        self.n = 0
        self.pointer: dict[str, Any] | None = None

    def create_snapshot_session(self, node: str, ttl: float = 15, what: str = "") -> str:
        self.n += 1
        return f"{node}-{self.n}"

    def acquire_archive_lock(self, session: str, node: str) -> bool:
        if self.holder is None:
            self.holder = session
        return self.holder == session

    def archive_lock_held(self) -> bool:
        return self.holder is not None

    def release_archive_lock(self, session: str) -> None:
        if self.holder == session:
            self.holder = None

    def renew_session(self, session: str) -> bool:
        return self.holder == session

    def destroy_session(self, session: str) -> None:
        pass

    def snapshot_pointer(self) -> dict[str, Any] | None:
        return self.pointer

    def archive_state(self) -> tuple[int, dict[str, Any] | None]:
        return self.index, self.state

    def write_archive_state(self, session: str, doc: dict[str, Any], index: int) -> bool:
        if self.holder != session or index != self.index:
            return False
        self.index += 1
        self.state = dict(doc)
        return True


class FakeStore:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put_segment(self, seg: Segment, blob: bytes) -> Segment:
        key = seg.name()
        self.blobs[key] = blob
        return Segment(seg.seq, seg.first, seg.last, seg.first_time, seg.last_time, seg.link,
                       seg.node, len(blob), key)

    def segments(self) -> list[Segment]:
        out = [Segment.from_key(k, "", len(b)) for k, b in sorted(self.blobs.items())]
        return [x for x in out if x is not None]

    def delete_segment(self, seg: Segment) -> None:
        del self.blobs[seg.key]

    def gtids(self) -> list[Gtid]:
        return [t.gtid for k in sorted(self.blobs)
                for t in binlog.read_segment(self.blobs[k])[1]]


class FakeServer:
    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir

    def execute(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        logs = sorted(p.name for p in self.datadir.glob("mysql-bin.*"))
        if sql == "SHOW BINARY LOGS":
            return [(n, (self.datadir / n).stat().st_size) for n in logs]
        if sql == "SHOW MASTER STATUS":
            return [(logs[-1], (self.datadir / logs[-1]).stat().st_size)]
        raise AssertionError(sql)


def node_log(datadir: Path, files: list[list[bytes]]) -> None:
    """Binary log files of transactions; every file but the last closed by a rotate."""
    datadir.mkdir(parents=True, exist_ok=True)
    for i, txs in enumerate(files, 1):
        tail = event(ROTATE, body=b"next") if i < len(files) else b""
        (datadir / f"mysql-bin.{i:06d}").write_bytes(FDE + b"".join(txs) + tail)


def archiver(name: str, datadir: Path, consul: FakeConsul, store: FakeStore,
             oldest: str | None = None) -> BinlogArchiver:
    a = BinlogArchiver(CFG, store, consul, node=name, datadir=datadir,  # type: ignore[arg-type]
                       socket=datadir / "s.sock",
                       status=lambda: NodeStatus(node=name, role=Role.REPLICA, healthy=True,
                                                 replicating=True, lag=0),
                       members=lambda: (), max_lag=30, oldest_snapshot_gtid=lambda: oldest,
                       stop=threading.Event())
    a.server = FakeServer(datadir)  # type: ignore[assignment]
    return a


def seqs(store: FakeStore) -> list[int]:
    return [g.seqno for g in store.gtids()]


def test_the_archive_continues_on_another_node_without_a_duplicate(tmp_path: Path) -> None:
    consul, store = FakeConsul(), FakeStore()
    node_log(tmp_path / "a", [[tx(1), tx(2)], [tx(3)]])
    a = archiver("a", tmp_path / "a", consul, store)
    assert a.tick() == 2  # one segment per file
    assert consul.state is not None and consul.state["last"] == "0-1-3"
    assert a.tick() == 0, "nothing new: nothing stored"
    # a's lock goes (its node died); b holds the same transactions in other files, and more
    consul.holder = None
    node_log(tmp_path / "b", [[tx(1)], [tx(2), tx(3), tx(4, server=2)], [tx(5, server=2)]])
    b = archiver("b", tmp_path / "b", consul, store)
    assert b.tick() == 2
    assert seqs(store) == [1, 2, 3, 4, 5]
    assert consul.state["last"] == "0-2-5" and not consul.state.get("gaps")
    links = [(s.link, s.first) for s in store.segments()]
    assert links == [("start", "0-1-1"), ("0-1-2", "0-1-3"), ("0-1-3", "0-2-4"),
                     ("0-2-4", "0-2-5")], links


def test_a_node_whose_log_cannot_continue_records_a_gap(tmp_path: Path) -> None:
    consul, store = FakeConsul(), FakeStore()
    node_log(tmp_path / "a", [[tx(1), tx(2)]])
    archiver("a", tmp_path / "a", consul, store).tick()
    consul.holder = None
    node_log(tmp_path / "b", [[tx(5), tx(6)]])  # 3 and 4 purged here
    b = archiver("b", tmp_path / "b", consul, store)
    assert b.tick() == 1
    assert seqs(store) == [1, 2, 5, 6]
    assert consul.state is not None
    gaps = consul.state["gaps"]
    assert gaps[0]["after"] == "0-1-2" and gaps[0]["resumed"] == "0-1-5"
    assert [s.link for s in store.segments()] == ["start", "gap"]
    assert "gap after 0-1-2" in b.problem
    b.tick()
    assert b.problem, "the gap stays reported until a snapshot after it"
    consul.pointer = {"id": "s", "finished_at": gaps[0]["at"] + 1}
    b.tick()
    assert b.problem == ""


def test_a_node_that_is_behind_waits(tmp_path: Path) -> None:
    consul, store = FakeConsul(), FakeStore()
    node_log(tmp_path / "a", [[tx(1), tx(2), tx(3)]])
    archiver("a", tmp_path / "a", consul, store).tick()
    consul.holder = None
    node_log(tmp_path / "b", [[tx(1), tx(2)]])
    b = archiver("b", tmp_path / "b", consul, store)
    assert b.tick() == 0 and seqs(store) == [1, 2, 3]
    assert consul.state is not None and not consul.state.get("gaps")
    (tmp_path / "b" / "mysql-bin.000001").write_bytes(FDE + tx(1) + tx(2) + tx(3) + tx(4))
    assert b.tick() == 1 and seqs(store) == [1, 2, 3, 4]


def test_an_empty_archive_starts_after_the_oldest_snapshot(tmp_path: Path) -> None:
    consul, store = FakeConsul(), FakeStore()
    node_log(tmp_path / "a", [[tx(1), tx(2)], [tx(3), tx(4)]])
    archiver("a", tmp_path / "a", consul, store, oldest="0-1-3").tick()
    assert seqs(store) == [4]


def test_retention_keeps_what_the_oldest_snapshot_needs(tmp_path: Path) -> None:
    consul, store = FakeConsul(), FakeStore()
    node_log(tmp_path / "a", [[tx(1), tx(2)], [tx(3), tx(4)], [tx(5)]])
    a = archiver("a", tmp_path / "a", consul, store)
    a.tick()
    assert seqs(store) == [1, 2, 3, 4, 5]
    a.oldest_snapshot_gtid = lambda: "0-1-3"  # the segment ending at 2 goes, 3..4 stays
    assert a.retention() == 1 and seqs(store) == [3, 4, 5]


def test_an_archiver_whose_lock_went_writes_nothing_more(tmp_path: Path) -> None:
    consul, store = FakeConsul(), FakeStore()
    node_log(tmp_path / "a", [[tx(1)]])
    a = archiver("a", tmp_path / "a", consul, store)
    a.tick()
    consul.holder = "someone-else"  # its session expired; another node holds the lock now
    (tmp_path / "a" / "mysql-bin.000001").write_bytes(FDE + tx(1) + tx(2))
    assert a.tick() == 0 and a.session is None
    consul.index += 1  # the other archiver moved the state meanwhile
    assert consul.state is not None and consul.state["last"] == "0-1-1"
    with pytest.raises(DCSError, match="lost the archiver's lock"):
        a.archive_once("a-1")
