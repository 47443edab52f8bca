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
from autopilot_mysql.exceptions import MySQLError
from autopilot_mysql.galera import NON_PRIMARY_GRACE, GaleraObservation, decide
from autopilot_mysql.galera_node import GaleraSupervisor
from autopilot_mysql.keys import ClusterKeys
from autopilot_mysql.model import Action, Decision, ProcState
from autopilot_mysql.mysql.server import FenceResult
from tests.unit.fakes import FakeClock


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


class SilentServer(FakeServer):
    """A joiner's mysqld: running, but it answers no query until its state transfer ends."""

    def execute(self, sql: str, args: object = None) -> list[tuple[Any, ...]]:
        raise MySQLError("Can't connect to local server through socket (2002)")


@dataclass
class JoinConsul(FakeConsul):
    keys: ClusterKeys = field(default_factory=ClusterKeys)

    def cluster_state(self, consistent: bool = False) -> ClusterKeys:
        return self.keys


@dataclass
class FakePeers:
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def want(self, addresses: object) -> None:
        pass

    def status(self, node: str, max_age: float) -> dict[str, Any] | None:
        return self.docs.get(node)


@dataclass
class JoinerMysqld(FakeMysqld):
    pid: int = 7

    def restart_in(self) -> float:
        return 0.0


def joiner(tmp_path: Path, *, bootstrap: bool = False
           ) -> tuple[GaleraSupervisor, FakePeers, FakeClock]:
    sup = supervisor(tmp_path, FenceResult.FENCED)
    sup.mysql = SilentServer(FenceResult.FENCED)  # type: ignore[assignment]
    sup.consul = JoinConsul(keys=ClusterKeys(members={  # type: ignore[assignment]
        "db2": {"address": "10.0.0.2"}, "db3": {"address": "10.0.0.3"}}))
    sup.mysqld = JoinerMysqld()  # type: ignore[assignment]
    sup.session = None
    peers, clock = FakePeers(), FakeClock()
    sup.peers = peers  # type: ignore[assignment]
    sup.clock = clock
    sup.disk.clock = clock
    sup.start_args = (["--wsrep-new-cluster", "--wsrep-cluster-address=gcomm://"] if bootstrap
                      else ["--wsrep-cluster-address=gcomm://10.0.0.2,10.0.0.3"])
    sup.view_primary = True  # its log's last view: the Primary Component it joined
    return sup, peers, clock


PRIMARY_DOC = {"healthy": True, "extra": {"wsrep": "Primary, Donor/Desynced"}}


def test_a_joiner_whose_donor_died_without_a_logged_view_leaves_for_the_census(
        tmp_path: Path) -> None:
    """CI's nemesis seed 602005: the donor was crashed by its fence while the joiner prepared
    its IST; the joiner's log never showed another view, so "its last view is not Primary"
    never held, and the census waited for ever on "db3 is starting". No member serving in a
    Primary Component for NON_PRIMARY_GRACE is enough."""
    sup, peers, clock = joiner(tmp_path)
    peers.docs["db2"] = PRIMARY_DOC  # the donor serves: the transfer may take its time
    assert decide(sup.observe()).action == Action.WAIT
    clock.now += NON_PRIMARY_GRACE + 60
    assert decide(sup.observe()).action == Action.WAIT, "a live donor: no limit on the wait"
    peers.docs.clear()  # the donor died
    sup.observe()
    clock.now += 1
    first = decide(sup.observe())
    assert first.action == Action.WAIT and "no Primary Component is in sight" in first.reason
    clock.now += NON_PRIMARY_GRACE - 1
    d = decide(sup.observe())
    assert d.action == Action.LEAVE and "its state transfer cannot finish" in d.reason


def test_a_bootstrapper_recovering_its_data_is_never_stopped_for_the_census(
        tmp_path: Path) -> None:
    """Everyone else waits for the bootstrapper: no member serves in a Primary Component while
    its InnoDB recovery runs, however long that takes."""
    sup, _, clock = joiner(tmp_path, bootstrap=True)
    sup.view_primary = None
    decide(sup.observe())
    clock.now += 10 * NON_PRIMARY_GRACE
    d = decide(sup.observe())
    assert d.action == Action.WAIT and "nothing kills it" in d.reason
