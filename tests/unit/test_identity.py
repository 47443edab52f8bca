"""A node that must take a new server_id (re-provisioned, or its recovery truncated its binary
log) allocates one from Consul and applies it live. When mysqld does not answer yet, the next
cycle applies the same id: one allocation per renewal, however many retries."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from autopilot_mysql.config import load_settings
from autopilot_mysql.daemon import Daemon
from autopilot_mysql.exceptions import DCSError, MySQLError
from autopilot_mysql.mysql import datadir as dd


class Counter:
    """Consul's server-id counter: one id per call, or down."""

    def __init__(self) -> None:
        self.next, self.down = 40, False

    def next_server_id(self) -> int:
        if self.down:
            raise DCSError("Consul unreachable")
        self.next += 1
        return self.next


class SlowMysqld:
    """mysqld that refuses `refusals` connections before it answers."""

    def __init__(self, refusals: int) -> None:
        self.refusals, self.applied = refusals, list[int]()

    def change_server_id(self, sid: int) -> str:
        if self.refusals:
            self.refusals -= 1
            raise MySQLError("Can't connect to local server through socket")
        self.applied.append(sid)
        return "0-35-100"


def daemon(tmp_path: Path, consul: Counter, mysql: SlowMysqld) -> Daemon:
    s = load_settings({"MARIADB_ROOT_PASSWORD": "r", "MYSQL_REPL_PASSWORD": "p",
                       "NODE_NAME": "db1", "ADVERTISE_ADDRESS": "10.0.0.5",
                       "MYSQL_DATADIR": str(tmp_path / "data"),
                       "MYSQL_RUNDIR": str(tmp_path / "run"),
                       "MYSQL_CONF_DIRS": str(tmp_path)})
    s.datadir.mkdir()
    s.rundir.mkdir()
    dd.write_node_state(s.datadir, {"server_id": 35, "node": "db1"})
    d = Daemon.__new__(Daemon)  # only what a renewal touches (no health server bound)
    d.s, d.server_id, d._fresh_sid = s, 35, None
    d.consul, d.mysql = consul, mysql  # type: ignore[assignment]
    d.node = SimpleNamespace(identity_pending="this node was re-provisioned",  # type: ignore
                             server_id=35, registered_role="replica")
    return d


def node_of(d: Daemon) -> Any:
    return d.node


def test_a_renewal_retried_while_mysqld_starts_allocates_one_server_id(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    consul, mysql = Counter(), SlowMysqld(refusals=5)
    d = daemon(tmp_path, consul, mysql)
    with caplog.at_level(logging.INFO):
        for _ in range(6):
            d._renew_identity()
    assert mysql.applied == [41] and consul.next == 41, "one id, applied once it could be"
    assert d.server_id == node_of(d).server_id == 41 and node_of(d).identity_pending == ""
    assert dd.read_node_state(d.s.datadir)["server_id"] == 41
    assert re.search(r"^server_id\s*=\s*41$", (d.s.rundir / "my.cnf").read_text(), re.M)
    assert sum("server_id 35 -> 41" in r.getMessage() for r in caplog.records) == 1
    assert sum("cannot take a new server_id yet" in r.getMessage()
               for r in caplog.records) == 5


def test_a_renewal_waits_for_consul_without_changing_anything(tmp_path: Path) -> None:
    consul, mysql = Counter(), SlowMysqld(refusals=0)
    consul.down = True
    d = daemon(tmp_path, consul, mysql)
    d._renew_identity()
    assert mysql.applied == [] and node_of(d).identity_pending
    assert dd.read_node_state(d.s.datadir)["server_id"] == 35
    consul.down = False
    d._renew_identity()
    assert mysql.applied == [41] and not node_of(d).identity_pending
