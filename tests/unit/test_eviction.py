"""The eviction thread's knock (galera.G11) against real loopback sockets, and its choice of
what to act on. The eviction itself runs against real Galera in
tests/integration/test_galera.py."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from autopilot_mysql import eviction
from autopilot_mysql.utils import nothing_listens, port_refused


def test_only_a_refused_connection_counts_as_nothing_listening() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_refused("127.0.0.1", port) is False  # something listens
    assert port_refused("127.0.0.1", port) is True  # closed: the kernel answers RST


def test_nothing_listens_needs_every_port_refused_twice() -> None:
    answers = {("h", 1): [True, True], ("h", 2): [True, False]}
    calls: list[tuple[str, int]] = []

    def knock(h: str, p: int) -> bool:
        calls.append((h, p))
        return answers[(h, p)].pop(0)
    assert nothing_listens("h", (1, 2), knock, sleep=lambda s: None) is False
    assert calls == [("h", 1), ("h", 2), ("h", 1), ("h", 2)]
    assert nothing_listens("h", (1,), lambda h, p: True, sleep=lambda s: None) is True
    never: list[int] = []
    assert nothing_listens("h", (1, 2), lambda h, p: bool(never.append(p)),
                           sleep=lambda s: None) is False
    assert never == [1]  # the first port that answers ends the knocking


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
