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
