"""The fence watchdog, shared by both topologies (election.I1 for replication, galera.G6).

A thread independent of the HA loop (which may be stuck in a slow Consul call, or was frozen
with the whole process): once the writer's lease ran out, it makes sure mysqld is read-only,
checking over its own connection (never trusting what the loop last published), and again each
time the loop lifted read_only since. When mysqld cannot be fenced in place it is crashed (it
restarts read-only): commits wait for acknowledgements that will not come, mysqld does not
answer, or this thread itself did not run for a while past the lease's end (frozen with the
process: nothing mysqld did meanwhile can be trusted, and a query to a just-resumed server
costs 100 ms and more, during which the new writer may already be open).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .exceptions import MySQLError
from .model import ProcState
from .mysql.server import FenceResult, LocalServer
from .process import ManagedProcess
from .utils import Clock

log = logging.getLogger(__name__)
# Seconds between looks while nothing is due: the lease's end (the loop only moves it later;
# it moves it earlier only when it fences itself) and a lift of read_only are seen within it.
# When a lift is pending, the thread sleeps until the lease's end exactly.
IDLE_PERIOD = 0.25
STALE_AFTER = 0.3  # this thread missed the lease's end by this much: it was frozen


@dataclass
class Opened:
    """What the loop last did to read_only: `gen` counts each lift (incremented after
    read_only is OFF), `pid` is the mysqld it lifted it on (a later mysqld starts read-only)."""
    gen: int = 0
    pid: int | None = None


class LoopStep:
    """What the HA loop is doing, and since when: said when the lease ran out (a heartbeat
    stuck in a slow Consul call, a slow step, or a starved process all look alike otherwise)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.name = "starting"
        self.since = clock.monotonic()

    def enter(self, name: str) -> None:
        self.name, self.since = name, self.clock.monotonic()

    def describe(self) -> str:
        return f"the HA loop is at '{self.name}' for {self.clock.monotonic() - self.since:.1f}s"


class LeaseWatchdog:
    def __init__(self, socket: Path, *, lease_end: Callable[[], float],
                 opened: Callable[[], Opened], mysqld: Callable[[], ManagedProcess | None],
                 crash: Callable[[str, int | None], None], clock: Clock,
                 stop: threading.Event, step: LoopStep | None = None) -> None:
        self.own = LocalServer(socket, connect_timeout=0.5, read_timeout=1.0)
        self.step = step
        self.lease_end = lease_end
        self.opened = opened
        self.mysqld = mysqld
        self.crash = crash
        self.clock = clock
        self.stop = stop
        self.verified = -1  # the generation last seen read-only (or gone) after the lease

    def start(self) -> None:
        threading.Thread(target=self.run, name="fence-watchdog", daemon=True).start()

    def run(self) -> None:
        while not self.stop.wait(self.next_look()):
            self.check()

    def next_look(self) -> float:
        """Seconds until the next look: the lease's end when read_only was lifted since the
        last verification, else IDLE_PERIOD (a few wake-ups a second, not twenty)."""
        if self.opened().gen == self.verified:
            return IDLE_PERIOD
        return min(IDLE_PERIOD, max(0.0, self.lease_end() - self.clock.monotonic()))

    def check(self) -> None:
        """One look (the thread's body; called directly by tests)."""
        now = self.clock.monotonic()
        o = self.opened()
        end = self.lease_end()
        if o.gen == self.verified or now < end:
            return
        proc = self.mysqld()
        if proc is None or proc.state != ProcState.RUNNING or proc.pid != o.pid:
            self.verified = o.gen  # not the mysqld we opened: it starts read-only (my.cnf)
            return
        pid = o.pid
        late = now - end
        self.verified = o.gen
        loop = f"; {self.step.describe()}" if self.step else ""
        if late > STALE_AFTER:
            self.crash(f"our lease ran out {late:.1f}s before the watchdog could look (the "
                       f"process was frozen or starved{loop})", pid)
            return
        try:
            if self.own.read_only_now():
                return
            result, killed = self.own.fence()
        except MySQLError as exc:
            log.error("watchdog: our lease ran out and mysqld does not answer (%s)%s", exc,
                      loop)
            self.crash("the lease ran out and mysqld did not answer the fence", pid)
            return
        if result == FenceResult.WAITING:
            self.crash(f"the lease ran out and read_only could not be set in time{loop}", pid)
        else:
            log.warning("watchdog: our lease ran out %.1fs ago while writable: fenced "
                        "(read_only ON, %d connection(s) dropped)%s", late, killed, loop)
