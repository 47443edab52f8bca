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
# Seconds between looks while no lease runs (a replica, or a writer whose lease ran out and
# was verified): shorter than any lease (2 * LOOP_WAIT + 1 >= 1.2 s), so a lift of read_only
# under a new lease is verified at that lease's end. While a lease runs, the thread sleeps
# until its end exactly: about one wake-up per lease on a healthy writer, not four a second.
IDLE_PERIOD = 0.5
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
        self.due = 0.0  # when the thread meant to wake for this look

    def start(self) -> None:
        threading.Thread(target=self.run, name="fence-watchdog", daemon=True).start()

    def run(self) -> None:
        while True:
            wait = self.next_look()
            self.due = self.clock.monotonic() + wait
            if self.stop.wait(wait):
                return
            self.check()

    def next_look(self) -> float:
        """Seconds until the next look. While a lease runs: its end, read now. The loop moves
        the end later with each heartbeat (this thread then looks, and sleeps again), or
        earlier only when it gives the lock up and fences itself; so the end read here is
        never after the lease's true end (the last heartbeat the others saw). With no lease:
        at once when a lift is still to be verified, else IDLE_PERIOD."""
        left = self.lease_end() - self.clock.monotonic()
        if left > 0:
            return left
        return IDLE_PERIOD if self.opened().gen == self.verified else 0.0

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
        # Late against the lease's end, or against the wake-up planned when the end was later:
        # a lease the loop ended early (its session gone: lease_from reset) is no sign that
        # this thread was frozen (it was read as "2740s late", and mysqld crashed for nothing).
        late = now - max(end, self.due)
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
