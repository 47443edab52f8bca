"""What wakes the replication supervisor's HA loop before its LOOP_WAIT ends, beside the
Consul watches and the child's exit: mysqld saying it is ready (a node that waits for it
looks at once), and a peer's /status changing what the acknowledgement set depends on (a
settled primary looks every few seconds: a replica that starts to follow it joined the set
up to 2 s late, in every bootstrap and after every failover)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from autopilot_mysql.config import load_settings
from autopilot_mysql.daemon import Daemon
from autopilot_mysql.events import Code


@pytest.fixture
def d(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon as `run` builds it (its health server binds a free loopback port, and is
    never started)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = Daemon(load_settings({
        "MARIADB_ROOT_PASSWORD": "r", "MYSQL_REPL_PASSWORD": "p", "NODE_NAME": "db1",
        "ADVERTISE_ADDRESS": "10.0.0.5", "MYSQL_DATADIR": str(tmp_path / "data"),
        "MYSQL_RUNDIR": str(tmp_path / "run"), "MYSQL_CONF_DIRS": str(tmp_path),
        "HEALTH_PORT": str(port)}))
    yield daemon
    daemon.api.httpd.server_close()


def test_mysqld_ready_wakes_the_loop_and_its_other_lines_do_not(d: Daemon) -> None:
    d._mysqld_line("2026-12-07 22:03:22 0 [Note] InnoDB: log sequence number 44894; "
                   "transaction id 14")
    d._mysqld_line("2026-12-07 22:03:22 0 [Note] Server socket created on IP: '0.0.0.0', "
                   "port: '3306'.")
    assert d.bus.wait(0) == []
    d._mysqld_line("2026-12-07 22:03:22 0 [Note] mariadbd: ready for connections.")
    assert [(e.code, e.source) for e in d.bus.wait(0)] == [(Code.MYSQLD_READY, "mysqld")]


def test_a_peer_change_wakes_the_loop(d: Daemon) -> None:
    assert d.peers.on_change is not None, "the daemon's peers must wake its loop"
    d.peers.on_change("db2")
    assert [(e.code, e.source) for e in d.bus.wait(0)] == [(Code.PEER_CHANGED, "db2")]
