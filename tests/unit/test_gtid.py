"""GTID positions: parsing, coverage and the failover candidate."""

from __future__ import annotations

import pytest

from autopilot_mysql import gtid
from autopilot_mysql.gtid import Gtid


def test_parse_and_render_round_trip() -> None:
    pos = gtid.parse("1-3-7, 0-1-105")
    assert pos == {0: Gtid(0, 1, 105), 1: Gtid(1, 3, 7)}
    assert gtid.render(pos) == "0-1-105,1-3-7"
    assert gtid.parse("") == {}
    for bad in ("0-1", "a-b-c", "0-1-2,0-1-3"):
        with pytest.raises(ValueError):
            gtid.parse(bad)


def test_covers_is_per_domain() -> None:
    a, b = gtid.parse("0-1-10,1-2-5"), gtid.parse("0-2-9")
    assert gtid.covers(a, b) and not gtid.covers(b, a)
    assert gtid.covers(a, {}) and not gtid.covers({}, b)


def test_best_candidate() -> None:
    P = gtid.parse
    assert gtid.best_candidate({"db1": P("0-1-5"), "db2": P("0-1-7"), "db3": P("0-1-6")}) == "db2"
    assert gtid.best_candidate({"db3": P("0-1-7"), "db2": P("0-1-7")}) == "db2"  # tie: name
    assert gtid.best_candidate({"db1": P(""), "db2": P("")}) == "db1"  # first boot
    # diverged across domains: nobody covers all, the larger total wins, the same everywhere
    assert gtid.best_candidate({"a": P("0-1-5,1-2-1"), "b": P("0-1-4,1-2-3")}) == "b"
    assert gtid.best_candidate({}) is None


def test_ahead_of_names_the_errant_range() -> None:
    assert gtid.ahead_of(gtid.parse("0-1-105"), gtid.parse("0-2-100")) == ["0-1-101..0-1-105"]
    assert gtid.ahead_of(gtid.parse("0-1-101"), gtid.parse("0-2-100")) == ["0-1-101"]
    assert gtid.ahead_of(gtid.parse("0-1-99"), gtid.parse("0-2-100")) == []


def test_merge_takes_the_further_position_per_domain() -> None:
    applied, received = gtid.parse("0-1-5,1-2-9"), gtid.parse("0-1-8")
    assert gtid.render(gtid.merge(applied, received)) == "0-1-8,1-2-9"
    assert gtid.covers(gtid.merge(applied, received), received)


@pytest.mark.parametrize("info,expected", [
    ("BEGIN GTID 0-1-105", Gtid(0, 1, 105)),
    ("BEGIN GTID 0-1-105 cid=42", Gtid(0, 1, 105)),  # group commit: the supervisor crashed
    ("GTID 2-7-9", Gtid(2, 7, 9)),  # DDL
    ("BEGIN GTID 0-1-105 trans", Gtid(0, 1, 105)),
    ("Server ver: 10.11.19-MariaDB, Binlog ver: 4", None),
    ("", None),
])
def test_gtid_of_a_binlog_event(info: str, expected: Gtid | None) -> None:
    assert gtid.of_event_info(info) == expected


class _Binlog:
    """SHOW BINARY LOGS / SHOW BINLOG EVENTS answered from a list, as the server would."""

    def __init__(self, files: dict[str, list[str]]) -> None:
        self.files = files
        self.reads = 0

    def execute(self, sql: str, args: tuple[object, ...] | None = None) -> list[tuple[object, ...]]:
        if sql.startswith("SHOW BINARY LOGS"):
            return [(name, 0) for name in self.files]
        name, pos, limit = args  # type: ignore[misc]
        self.reads += 1
        events = self.files[str(name)]
        start = (int(pos) - 4) // 10  # each fake event is 10 bytes long
        rows = []
        for i, info in enumerate(events[start:start + int(limit)], start):  # type: ignore[call-overload]
            kind = "Gtid" if "GTID" in info else "Query"
            rows.append((name, 4 + 10 * i, kind, 1, 4 + 10 * (i + 1), info))
        return rows


def test_errant_gtids_are_listed_from_the_binary_log_in_bounded_pages() -> None:
    from autopilot_mysql.mysql.server import LocalServer

    log = _Binlog({
        "mysql-bin.000001": ["BEGIN GTID 0-1-1", "COMMIT", "BEGIN GTID 0-1-2 cid=7"],
        "mysql-bin.000002": [f"BEGIN GTID 0-1-{n} cid=9" for n in range(3, 40)] + ["COMMIT"],
    })
    server = LocalServer.__new__(LocalServer)
    server.execute = log.execute  # type: ignore[method-assign]
    base = gtid.parse("0-2-30")  # the new primary's position when it took over
    assert server.binlog_gtids_after(base, page=8) == [f"0-1-{n}" for n in range(31, 40)]
    # A huge log: the scan stops after max_events and returns what it found so far.
    log.reads = 0
    assert server.binlog_gtids_after(gtid.parse("0-2-1"), page=5, max_events=10)
    assert log.reads == 2
