"""galera_node's actions on a fence that cannot finish (nemesis seed 32187: a writer whose
volume was full handed over while SET read_only still waited behind its stuck commits, and
the next writer opened beside it). Fakes stand in for mysqld and Consul: only the action's
logic is under test here; the fence itself runs against real MariaDB in the integration
tests."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from autopilot_mysql.config import load_settings
from autopilot_mysql.galera import GaleraObservation
from autopilot_mysql.galera_node import GaleraSupervisor
from autopilot_mysql.model import Action, Decision, ProcState
from autopilot_mysql.mysql.server import FenceResult


@dataclass
class FakeServer:
    result: FenceResult
    fences: int = 0

    def fence(self) -> tuple[FenceResult, int]:
        self.fences += 1
        return self.result, 0

    def execute(self, sql: str, args: object = None) -> list[tuple[Any, ...]]:
        return [("wsrep_last_committed", "41")]


@dataclass
class FakeConsul:
    calls: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **kw: self.calls.append(name)


@dataclass
class FakeMysqld:
    crashed: list[str] = field(default_factory=list)
    state: ProcState = ProcState.RUNNING

    def crash(self, why: str, pid: int | None = None) -> None:
        self.crashed.append(why)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def supervisor(tmp_path: Path, result: FenceResult) -> GaleraSupervisor:
    s = load_settings({"MARIADB_ROOT_PASSWORD": "r", "MYSQL_REPL_PASSWORD": "p",
                       "NODE_NAME": "db1", "TOPOLOGY": "galera",
                       "ADVERTISE_ADDRESS": "10.0.0.1", "HEALTH_PORT": str(free_port()),
                       "MYSQL_DATADIR": str(tmp_path / "data"),
                       "MYSQL_RUNDIR": str(tmp_path / "run")})
    sup = GaleraSupervisor(s)
    sup.mysql = FakeServer(result)  # type: ignore[assignment]
    sup.consul = FakeConsul()  # type: ignore[assignment]
    sup.mysqld = FakeMysqld()  # type: ignore[assignment]
    sup.session = "s1"
    return sup


OBS = GaleraObservation(node="db1", mysqld=ProcState.RUNNING, roomy_readers=("db2",))


@pytest.mark.parametrize("action", [Action.HAND_OVER, Action.FENCE])
def test_a_fence_that_cannot_finish_crashes_mysqld_and_hands_nothing_over(
        tmp_path: Path, action: Action) -> None:
    sup = supervisor(tmp_path, FenceResult.WAITING)
    sup.act(Decision(action, "test"), OBS)
    assert sup.mysqld.crashed, "mysqld must be crashed when read_only cannot be set"  # type: ignore[union-attr]
    assert "hand_over" not in sup.consul.calls  # type: ignore[attr-defined]


def test_a_fenced_writer_hands_over(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, FenceResult.FENCED)
    sup.act(Decision(Action.HAND_OVER, "test"), OBS)
    assert "hand_over" in sup.consul.calls  # type: ignore[attr-defined]
    assert not sup.mysqld.crashed  # type: ignore[union-attr]
