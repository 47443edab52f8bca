"""peers.Peers against a loopback HTTP server: what it keeps, and when it wakes the HA loop."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from autopilot_mysql.peers import Peers
from tests.unit.fakes import loopback_http

DOC: dict[str, Any] = {}


@pytest.fixture
def port() -> Iterator[int]:
    DOC.clear()
    DOC.update(leader="db1", errant=[], behind="", data_id="d2", gtid_current_pos="0-1-1")
    with loopback_http(lambda method, path, body: (200, json.dumps(DOC).encode())) as (p, _):
        yield p


def polls(peers: Peers, node: str, n: int) -> None:
    """Wait for `n` more answers from `node` (each is a new timestamp)."""
    for _ in range(n):
        before = peers._last.get(node)
        deadline = time.monotonic() + 5
        while peers._last.get(node) is before:
            assert time.monotonic() < deadline, f"no answer from {node}"
            peers.poke()
            time.sleep(0.005)


def test_the_loop_is_woken_by_a_first_answer_and_by_a_decisive_change_only(port: int) -> None:
    woken: list[str] = []
    peers = Peers(port, interval=0.02, on_change=woken.append)
    try:
        peers.want({"db2": "127.0.0.1"})
        # Two answers each time: the thread calls on_change after it stored an answer, and
        # before it asks again, so the second proves the first one's call is done.
        polls(peers, "db2", 2)
        assert woken == ["db2"], "the first answer must wake the loop"
        DOC["gtid_current_pos"] = "0-1-9"  # commits replicate all the time: no wake-up
        DOC["cycle_at"] = 12.5
        polls(peers, "db2", 3)
        assert woken == ["db2"]
        assert peers.status("db2", max_age=5) == DOC
        DOC["leader"] = "db3"  # it follows another node now: the keeper must know
        polls(peers, "db2", 2)
        assert woken == ["db2", "db2"]
        DOC["data_id"] = "d2-rebuilt"
        polls(peers, "db2", 2)
        assert woken == ["db2", "db2", "db2"]
    finally:
        peers.stop()


def test_without_a_listener_nothing_is_called(port: int) -> None:
    peers = Peers(port, interval=0.02)
    try:
        peers.want({"db2": "127.0.0.1"})
        polls(peers, "db2", 2)
        assert peers.status("db2", max_age=5) == DOC
    finally:
        peers.stop()
