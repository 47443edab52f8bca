"""Point-in-time recovery without S3 or MariaDB: binary logs cut into whole transactions
(synthetic events with MariaDB's header layout), and the restore plan: which snapshot, which
segments, and the refusals (a gap, a point past the archive, a point before every snapshot)."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from autopilot_mysql.backup import binlog
from autopilot_mysql.backup.binlog import GTID, QUERY, ROTATE, XID
from autopilot_mysql.backup.pitr import Plan, Point, _position, make_plan, parse_time
from autopilot_mysql.backup.store import Manifest, Segment
from autopilot_mysql.exceptions import SnapshotError
from autopilot_mysql.gtid import Gtid, one

TABLE_MAP, WRITE_ROWS, CHECKPOINT = 19, 30, 161


def event(typ: int, ts: int = 1000, server: int = 1, body: bytes = b"") -> bytes:
    length = binlog.HEADER + len(body) + 4  # a CRC32 checksum trails every event
    return struct.pack("<IBIIIH", ts, typ, server, length, 0, 0) + body + b"\0" * 4


def gtid_event(seq: int, ts: int = 1000, server: int = 1, domain: int = 0) -> bytes:
    return event(GTID, ts, server, struct.pack("<QIB", seq, domain, 0) + b"\0" * 6)


def tx(seq: int, ts: int = 1000, server: int = 1, rows: int = 1) -> bytes:
    return (gtid_event(seq, ts, server) + event(TABLE_MAP, ts, server, b"t" * 10)
            + b"".join(event(WRITE_ROWS, ts, server, b"r" * 20) for _ in range(rows))
            + event(XID, ts, server, b"x" * 8))


FDE = binlog.MAGIC + event(binlog.FORMAT_DESCRIPTION, body=b"f" * 80)


def test_whole_transactions_only() -> None:
    data = FDE + tx(1) + event(CHECKPOINT) + tx(2, rows=3) + tx(3)
    header, first = binlog.read_header(data)
    assert header.raw == FDE and first == len(FDE)
    txs = list(binlog.transactions(data, first))
    assert [t.gtid for t in txs] == [Gtid(0, 1, 1), Gtid(0, 1, 2), Gtid(0, 1, 3)]
    assert txs[1].events == 6
    # a log cut inside the last transaction (a crash, or the server still writing it)
    cut = data[:-len(event(XID, body=b"x" * 8))]
    assert [t.gtid.seqno for t in binlog.transactions(cut, first)] == [1, 2]
    # cut in the middle of an event
    assert [t.gtid.seqno for t in binlog.transactions(data[:-3], first)] == [1, 2]
    # the server says its log ends before the third transaction
    assert [t.gtid.seqno for t in binlog.transactions(data, first, txs[2].start)] == [1, 2]


def test_a_closed_file_ends_with_a_rotate() -> None:
    data = FDE + tx(7) + event(ROTATE, body=b"mysql-bin.000002")
    assert [t.gtid.seqno for t in binlog.transactions(data, len(FDE))] == [7]


def test_ddl_ends_with_its_query() -> None:
    data = FDE + gtid_event(4) + event(QUERY, body=b"CREATE TABLE t (i int)")
    assert [t.gtid.seqno for t in binlog.transactions(data, len(FDE))] == [4]


def test_a_segment_is_a_binary_log_of_its_own() -> None:
    data = FDE + tx(1) + tx(2) + tx(3)
    header, first = binlog.read_header(data)
    txs = list(binlog.transactions(data, first))
    seg = binlog.segment(header, data, txs[1:])
    h2, again = binlog.read_segment(seg)
    assert h2 == header and [t.gtid.seqno for t in again] == [2, 3]
    assert seg[again[0].start:again[-1].end] == data[txs[1].start:txs[2].end]


def test_an_encrypted_or_foreign_log_is_refused() -> None:
    with pytest.raises(binlog.BinlogError, match="not a binary log"):
        binlog.read_header(b"hello world, not a log at all")
    data = FDE + event(binlog.START_ENCRYPTION) + tx(1)
    with pytest.raises(binlog.BinlogError, match="encrypted"):
        list(binlog.transactions(data, len(FDE)))


def test_gtid_and_time_parsing() -> None:
    assert one("0-12-345") == Gtid(0, 12, 345) and str(Gtid(0, 12, 345)) == "0-12-345"
    with pytest.raises(ValueError, match="not a GTID"):
        one("12345")
    assert parse_time("2026-11-22 10:15:00") == 1795342500.0
    assert parse_time("2026-11-22T10:15:00Z") == 1795342500.0
    with pytest.raises(SnapshotError, match="2026-11-22 10:15:00"):
        parse_time("yesterday")
    assert _position("0-1-10", Gtid(0, 2, 15)) == "0-2-15"
    assert _position("0-1-10,1-1-3", None) == "0-1-10,1-1-3"


M = Manifest(id="20260101T000000Z-db1", node="db1", role="replica", primary="db2",
             gtid="0-1-10", binlog_file="", server_version="10.11", started_at=90.0,
             finished_at=100.0, raw_bytes=1, stored_bytes=1, sha256="0", s3_checksum="x")
M2 = replace(M, id="20260102T000000Z-db1", gtid="0-2-30", finished_at=300.0)


def seg(n: int, first: int, last: int, t0: int, t1: int, link: str, server: int = 1,
        node: str = "db3") -> Segment:
    return Segment(n, f"0-{server}-{first}", f"0-{server}-{last}", t0, t1, link, node, 10,
                   f"k{n}")


SEGS = [seg(1, 1, 12, 50, 110, "start"), seg(2, 13, 20, 110, 200, "0-1-12"),
        seg(3, 21, 35, 200, 320, "0-1-20", 2), seg(4, 36, 40, 320, 400, "0-2-35", 2)]
STATE = {"last": "0-2-40", "last_time": 400, "checked_at": 500.0}


def ids(plan: Plan) -> list[int]:
    return [s.seq for s in plan.segments]


def test_the_plan_picks_the_newest_snapshot_before_the_point() -> None:
    p = make_plan([M, M2], SEGS, STATE, Point(gtid=Gtid(0, 1, 18)))
    assert p.snapshot == M and p.floor == 10 and ids(p) == [1, 2]
    p = make_plan([M, M2], SEGS, STATE, Point(gtid=Gtid(0, 2, 38)))
    assert p.snapshot == M2 and p.floor == 30 and ids(p) == [3, 4]
    p = make_plan([M, M2], SEGS, STATE, Point(time=250.0))
    assert p.snapshot == M and ids(p) == [1, 2, 3]
    p = make_plan([M, M2], SEGS, STATE, Point(time=450.0))  # past the last event: complete
    assert p.snapshot == M2 and ids(p) == [3, 4]
    assert "snapshot 20260102T000000Z-db1" in p.text() and "segment" in p.text()


def test_the_plan_refuses_what_cannot_be_restored() -> None:
    with pytest.raises(SnapshotError, match="before the oldest snapshot"):
        make_plan([M, M2], SEGS, STATE, Point(time=99.0))
    with pytest.raises(SnapshotError, match="reaches only"):
        make_plan([M, M2], SEGS, STATE, Point(gtid=Gtid(0, 2, 41)))
    with pytest.raises(SnapshotError, match="complete only up to"):
        make_plan([M, M2], SEGS, STATE, Point(time=600.0))
    gap = [SEGS[0], SEGS[1], replace(SEGS[2], first="0-2-23", link="gap")]
    with pytest.raises(SnapshotError, match="gap"):
        make_plan([M], gap, STATE, Point(gtid=Gtid(0, 2, 30)))
    # before the gap is fine
    assert ids(make_plan([M], gap, STATE, Point(gtid=Gtid(0, 1, 20)))) == [1, 2]
    with pytest.raises(SnapshotError, match="no usable snapshot"):
        make_plan([], SEGS, STATE, Point(time=250.0))


def test_a_late_archivers_duplicate_segment_is_left_out() -> None:
    """Two segments numbered 2: the one that continues the chain is used."""
    late = replace(seg(2, 13, 16, 110, 150, "0-1-12", node="db1"), key="k2-late")
    p = make_plan([M], [SEGS[0], late, SEGS[1], SEGS[2]], STATE, Point(gtid=Gtid(0, 2, 22)))
    assert [s.key for s in p.segments] == ["k1", "k2", "k3"]


def test_holes_in_the_sequence_numbers_are_not_gaps() -> None:
    """Galera leaves sequence numbers no member's log holds: the links make the chain."""
    holes = [seg(1, 1, 12, 50, 110, "start"), seg(2, 14, 20, 110, 200, "0-1-12"),
             seg(3, 22, 35, 200, 320, "0-1-20")]
    assert ids(make_plan([M], holes, STATE, Point(gtid=Gtid(0, 1, 30)))) == [1, 2, 3]
    late = replace(M, gtid="0-1-13")  # a snapshot at a position in a hole
    assert ids(make_plan([late], holes[1:], STATE, Point(gtid=Gtid(0, 1, 30)))) == [2, 3]
    with pytest.raises(SnapshotError, match="gap after 0-1-20"):
        make_plan([M], holes[:2] + [replace(holes[2], link="0-1-19")], STATE,
                  Point(gtid=Gtid(0, 1, 30)))
    assert make_plan([M], holes, STATE, Point(gtid=Gtid(0, 1, 10))).segments == []


def test_a_segment_is_replayed_after_the_snapshot_up_to_the_point() -> None:
    txs = [binlog.Transaction(Gtid(0, 1, n), 100 + n, 0, 0, 1) for n in range(8, 14)]
    by_gtid = make_plan([M], SEGS, STATE, Point(gtid=Gtid(0, 1, 12)))
    assert [t.gtid.seqno for t in by_gtid.select(txs)] == [11, 12]  # the snapshot holds 10
    by_time = make_plan([M], SEGS, STATE, Point(time=112.0))
    assert [t.gtid.seqno for t in by_time.select(txs)] == [11]  # written at 111; 112 is not before
