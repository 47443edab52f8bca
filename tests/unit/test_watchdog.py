"""The fence watchdog's choices (watchdog.py), one look at a time against a scripted clock, a
scripted mysqld process and a scripted server."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopilot_mysql.exceptions import MySQLError
from autopilot_mysql.model import ProcState
from autopilot_mysql.mysql.server import FenceResult
from autopilot_mysql.watchdog import IDLE_PERIOD, STALE_AFTER, LeaseWatchdog, LoopStep, Opened
from tests.unit.fakes import FakeClock as Clock


@dataclass
class Proc:
    pid: int | None = 42
    state: ProcState = ProcState.RUNNING


@dataclass
class Server:
    read_only: bool = False
    fence_result: FenceResult = FenceResult.FENCED
    fails: bool = False
    calls: list[str] = field(default_factory=list)

    def read_only_now(self) -> bool:
        self.calls.append("read")
        if self.fails:
            raise MySQLError("no answer")
        return self.read_only

    def fence(self) -> tuple[FenceResult, int]:
        self.calls.append("fence")
        self.read_only = True
        return self.fence_result, 2


class Rig:
    def __init__(self, lease_end: float = 99.0, opened: Opened | None = None) -> None:
        self.clock = Clock()
        self.proc: Proc | None = Proc()
        self.end = lease_end
        self.opened = opened or Opened(1, 42)
        self.crashes: list[tuple[str, int | None]] = []
        self.server = Server()
        self.step = LoopStep(self.clock)
        self.wd = LeaseWatchdog(Path("/nonexistent.sock"), lease_end=lambda: self.end,
                                opened=lambda: self.opened, mysqld=lambda: self.proc,  # type: ignore[arg-type,return-value]
                                crash=lambda why, pid: self.crashes.append((why, pid)),
                                clock=self.clock, stop=threading.Event(), step=self.step)
        self.wd.own = self.server  # type: ignore[assignment]

    def look(self) -> Any:
        self.wd.check()
        return self.server.calls


def test_within_the_lease_it_does_nothing() -> None:
    r = Rig(lease_end=101.0)
    assert r.look() == [] and not r.crashes


def test_past_the_lease_a_writable_mysqld_is_fenced_once_per_lift() -> None:
    r = Rig(lease_end=99.9)
    assert r.look() == ["read", "fence"] and r.server.read_only
    assert r.look() == ["read", "fence"]  # the same generation: not asked again
    r.opened = Opened(2, 42)  # the loop lifted read_only again
    r.server.read_only = False
    assert r.look() == ["read", "fence", "read", "fence"]
    assert not r.crashes


def test_an_already_read_only_mysqld_is_only_read() -> None:
    r = Rig(lease_end=99.9)
    r.server.read_only = True
    assert r.look() == ["read"] and not r.crashes


def test_a_mysqld_started_since_the_lift_is_left_alone() -> None:
    """It starts read-only (my.cnf); it may be joining by IST and must not be crashed."""
    r = Rig(lease_end=99.9)
    r.proc = Proc(pid=43)
    assert r.look() == [] and not r.crashes
    r.proc = None
    r.opened = Opened(2, 42)
    assert r.look() == [] and not r.crashes


def test_a_watchdog_that_wakes_long_past_the_lease_crashes_without_asking() -> None:
    """Frozen with the process: a query to the just-resumed server would leave it writable
    beside the new writer for 100 ms and more."""
    r = Rig(lease_end=100.0 - STALE_AFTER - 0.5)
    assert r.look() == []
    assert len(r.crashes) == 1 and r.crashes[0][1] == 42 and "frozen" in r.crashes[0][0]
    r.look()
    assert len(r.crashes) == 1  # once per generation


def test_waiting_commits_or_no_answer_crash_mysqld() -> None:
    r = Rig(lease_end=99.9)
    r.clock.now = 97.5
    r.step.enter("heartbeat")  # the loop's heartbeat hangs in a slow Consul call
    r.clock.now = 100.0
    r.server.fence_result = FenceResult.WAITING
    r.look()
    assert [why for why, _ in r.crashes] == [
        "the lease ran out and read_only could not be set in time; the HA loop is at "
        "'heartbeat' for 2.5s"]
    r = Rig(lease_end=99.9)
    r.server.fails = True
    r.look()
    assert r.crashes and "did not answer" in r.crashes[0][0]


def test_it_sleeps_until_the_lease_ends_and_looks_at_once() -> None:
    """One wake-up per lease on a healthy writer (idle cost), and a look at the lease's end
    exactly, never a period later (the grace other nodes wait covers the fence, not a sleep)."""
    r = Rig(lease_end=100.1)
    assert abs(r.wd.next_look() - 0.1) < 1e-9
    r.clock.now = 100.1
    assert r.wd.next_look() == 0.0
    assert r.look() == ["read", "fence"]
    assert r.wd.next_look() == IDLE_PERIOD  # verified, no lease: nothing due until a lift
    r.opened = Opened(2, 42)  # the loop lifted read_only again, with a renewed lease
    r.server.read_only = False
    r.end = 105.0
    assert abs(r.wd.next_look() - 4.9) < 1e-9  # until that lease's end, however far
    r.clock.now = 105.0
    assert r.wd.next_look() == 0.0
    assert r.look() == ["read", "fence", "read", "fence"]


def test_a_replica_looks_less_often_than_any_lease_lasts() -> None:
    r = Rig(lease_end=2.0, opened=Opened(0, None))  # never lifted; lease_from 0: end = lease
    r.proc = Proc(pid=42)
    assert r.wd.next_look() == 0.0
    assert r.look() == [] and r.wd.next_look() == IDLE_PERIOD < 1.2  # the shortest lease


def test_a_lease_the_loop_ended_early_is_verified_not_taken_for_a_frozen_thread() -> None:
    """The session went while the thread slept towards the lease's end: lease_from is reset
    to 0, so the end reads as long past. Lateness counts from the planned wake-up: read_only
    is checked (the loop fenced) and mysqld is not crashed (it was, as "2740s late")."""
    r = Rig(lease_end=101.5)
    r.wd.due = r.clock.now + r.wd.next_look()  # as run() plans it
    r.end = 2.0  # the loop: session gone, lease_from = 0, and it fenced itself
    r.server.read_only = True
    r.clock.now = 101.51  # woken at the planned time
    assert r.look() == ["read"] and not r.crashes
    # the same thread, woken 1 s after its planned time, was frozen
    r = Rig(lease_end=101.5)
    r.wd.due = 101.5
    r.end = 2.0
    r.clock.now = 102.5
    assert r.look() == [] and len(r.crashes) == 1 and "frozen" in r.crashes[0][0]
