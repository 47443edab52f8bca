"""The eviction thread's knock (galera.G11) against real loopback sockets, and its choice of
what to act on. The eviction itself runs against real Galera in
tests/integration/test_galera.py."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from autopilot_mysql import eviction


def test_only_a_refused_connection_counts_as_nothing_listening() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert eviction.refused("127.0.0.1", port) is False  # something listens
    assert eviction.refused("127.0.0.1", port) is True  # closed: the kernel answers RST


def test_a_peer_that_answers_once_is_left_alone_and_never_queried(tmp_path: Path) -> None:
    knocks = iter([True, False])
    ev = eviction.Evictor(tmp_path / "no.sock", threading.Event(),
                          knock=lambda h, p: next(knocks))
    ev.handle("10.0.0.2", 4567)  # would raise MySQLError if it asked the (absent) server


def test_several_peers_lost_at_once_are_never_knocked_on(tmp_path: Path) -> None:
    def knock(h: str, p: int) -> bool:
        raise AssertionError("knocked")
    ev = eviction.Evictor(tmp_path / "no.sock", threading.Event(), knock=knock)
    ev.handle("10.0.0.2", 4567, lost=2)


def test_a_lost_peer_is_queued_once_while_pending(tmp_path: Path) -> None:
    ev = eviction.Evictor(tmp_path / "no.sock", threading.Event())
    ev.lost((("10.0.0.2", 4567),))
    ev.lost((("10.0.0.2", 4567), ("10.0.0.3", 4567)))
    assert ev.todo.qsize() == 2
