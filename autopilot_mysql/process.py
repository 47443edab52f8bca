"""Managed child processes (mysqld, the local Consul agent).

Each child runs in its own process group (so a stop or a time-out reaches its whole tree), its
output is folded line by line into the supervisor's log, and its exit is published as an event.
Restarts follow a RestartPolicy: exponential backoff, and after more than `max_restarts`
unexpected exits within `window` seconds the child stays down (FAILED) and says why.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .events import Code, Event, EventBus
from .exceptions import ProcessError
from .model import ProcState
from .utils import Clock, SystemClock

log = logging.getLogger(__name__)


@dataclass
class RestartPolicy:
    """Pure bookkeeping of unexpected exits; unit-tested with a fake clock."""

    max_restarts: int = 5
    window: float = 300.0
    first_backoff: float = 0.5
    max_backoff: float = 30.0
    failures: collections.deque[float] = field(default_factory=collections.deque)

    def record_failure(self, now: float) -> float | None:
        """Note an unexpected exit at `now`; return the delay before restarting, or None when
        the child must stay down (too many failures within the window)."""
        self.failures.append(now)
        while self.failures and self.failures[0] < now - self.window:
            self.failures.popleft()
        n = len(self.failures)
        if n > self.max_restarts:
            return None
        return float(min(self.first_backoff * (2 ** (n - 1)), self.max_backoff))

    def reset(self) -> None:
        self.failures.clear()


def _level_of(line: str) -> int:
    if "[ERROR]" in line or " ERROR " in line:
        return logging.ERROR
    if "[Warning]" in line or "[WARN]" in line:
        return logging.WARNING
    return logging.INFO


def describe_status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def session_members(sid: int, outside_group: bool = False) -> dict[int, str]:
    """Every process (pid -> name) of the session `sid` (Linux /proc), the leader included;
    with `outside_group`, only those not in the leader's process group."""
    out: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        name, _, rest = stat.partition(" (")[2].rpartition(") ")
        fields = rest.split()
        if len(fields) > 3 and fields[3] == str(sid) \
                and not (outside_group and fields[2] == str(sid)):
            out[int(entry.name)] = name
    return out


def signal_session(sid: int, sig: int, outside_group: bool = False) -> list[str]:
    """Send `sig` to every process of the session `sid` (see session_members); their names
    and pids."""
    hit = []
    for pid, name in session_members(sid, outside_group).items():
        try:
            os.kill(pid, sig)
            hit.append(f"{name} ({pid})")
        except (ProcessLookupError, PermissionError):
            continue
    return hit


class ManagedProcess:
    def __init__(self, name: str, argv: Sequence[str], *, bus: EventBus,
                 env: Mapping[str, str] | None = None, cwd: str | None = None,
                 policy: RestartPolicy | None = None, clock: Clock | None = None,
                 preexec: Callable[[], None] | None = None,
                 extra_args: Callable[[], Sequence[str]] | None = None,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.extra_args = extra_args  # decided again before every start
        self.on_line = on_line  # sees every line of its output (from the output thread)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.bus = bus
        self.policy = policy or RestartPolicy()
        self.clock = clock or SystemClock()
        self._preexec = preexec
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._state = ProcState.STOPPED
        self._restart_at = 0.0
        self._stopping = False
        self._crashing = ""  # why we SIGKILLed it on purpose, to restart it at once
        self.last_error = ""
        self.exits = 0  # unexpected exits since the supervisor started (crashes, kills)
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self.log = logging.getLogger(f"autopilot_mysql.{name}")

    # --- observation --------------------------------------------------------------------------

    @property
    def state(self) -> ProcState:
        with self._lock:
            return self._state

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def restart_in(self) -> float:
        with self._lock:
            return max(0.0, self._restart_at - self.clock.monotonic())

    # --- control ------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                raise ProcessError(f"{self.name} is already running (pid {self._proc.pid})")
            self._reap_leftovers(self._proc)
            argv = self.argv + list(self.extra_args() if self.extra_args else ())
            try:
                proc = subprocess.Popen(
                    argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: stop() reaches its tree
                    preexec_fn=self._preexec)
            except OSError as exc:
                raise ProcessError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
            self._proc = proc
            self._state = ProcState.RUNNING
            self._stopping = False
            self._crashing = ""
        self.log.info("started %s (pid %d)", self.name, proc.pid)
        threading.Thread(target=self._pump, args=(proc,), name=f"{self.name}-output",
                         daemon=True).start()

    def restart_due(self) -> bool:
        with self._lock:
            return (self._state == ProcState.BACKOFF
                    and self.clock.monotonic() >= self._restart_at)

    def stop(self, timeout: float, sig: int = signal.SIGTERM) -> bool:
        """Send `sig` to the process group and wait; SIGKILL the group after `timeout`.
        Returns True when the child exited on its own within the timeout."""
        with self._lock:
            proc = self._proc
            self._stopping = True
            if proc is None or proc.poll() is not None:
                self._state = ProcState.STOPPED
                self._reap_leftovers(proc)
                return True
            self._state = ProcState.STOPPING
        self.log.info("stopping %s (pid %d) with %s, up to %.0fs", self.name, proc.pid,
                      signal.Signals(sig).name, timeout)
        self._signal_group(proc, sig)
        try:
            proc.wait(timeout)
            clean = True
        except subprocess.TimeoutExpired:
            self.log.error("%s did not stop within %.0fs: killing its process group",
                           self.name, timeout)
            self._signal_group(proc, signal.SIGKILL)
            proc.wait()
            clean = False
        with self._lock:
            self._state = ProcState.STOPPED
        return clean

    def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._stopping = True
            self._signal_group(proc, signal.SIGKILL)
            proc.wait()

    def crash(self, reason: str, pid: int | None = None) -> None:
        """SIGKILL the whole process group on purpose and restart it at once (not counted
        as a failure): the fence's last resort, when mysqld must stop before it can finish
        commits that were never acknowledged. With `pid`, only if that is still the one
        running (not a process started since, which begins read-only)."""
        proc = self._proc
        if proc is None or proc.poll() is not None or pid is not None and proc.pid != pid:
            return
        with self._lock:
            self._crashing = reason
        self.log.warning("crashing %s on purpose (pid %d): %s", self.name, proc.pid, reason)
        self._signal_group(proc, signal.SIGKILL)

    def give_up(self, reason: str) -> None:
        with self._lock:
            self._state = ProcState.FAILED
            self.last_error = reason

    # --- internals ------------------------------------------------------------------------------

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        """The child's process group, and every other process of its session: helpers that
        put themselves in a group of their own (a Galera SST script runs socat under
        `timeout`, which does) would otherwise outlive it, holding its port and writing into
        the data directory of the next run."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        # Once each: a second SIGTERM makes Consul's agent skip its graceful leave.
        signal_session(proc.pid, sig, outside_group=True)

    def _reap_leftovers(self, proc: subprocess.Popen[bytes] | None) -> None:
        """Before a new start: what the last run left in its session (it exited, or was
        killed, while a helper of its own group still ran) goes first."""
        if proc is None:
            return
        left = signal_session(proc.pid, signal.SIGKILL)
        if left:
            self.log.warning("killed %d process(es) that %s's last run (pid %d) left behind: %s",
                             len(left), self.name, proc.pid, ", ".join(left))

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        """Fold the child's output into our log, then record its exit."""
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.tail.append(line)
                self.log.log(_level_of(line), "%s", line)
                if self.on_line is not None:
                    self.on_line(line)
        code = proc.wait()
        with self._lock:
            if proc is not self._proc:
                return
            if self._stopping:
                self._state = ProcState.STOPPED
                self.log.info("%s stopped (%s)", self.name, describe_status(code))
            elif self._crashing:
                self.exits += 1
                self._state = ProcState.BACKOFF
                self._restart_at = self.clock.monotonic()
                self.last_error = f"{self.name} crashed on purpose: {self._crashing}"
                self._crashing = ""
            else:
                self.exits += 1
                now = self.clock.monotonic()
                delay = self.policy.record_failure(now)
                last = self.tail[-1] if self.tail else "no output"
                what = describe_status(code)
                if delay is None:
                    self._state = ProcState.FAILED
                    self.last_error = (
                        f"{self.name} {what}; it failed {len(self.policy.failures)} times "
                        f"within {self.policy.window:.0f}s, so it stays down. Last output: "
                        f"{last}")
                    self.log.error("%s. Fix the cause, then restart the container.",
                                   self.last_error)
                else:
                    self._state = ProcState.BACKOFF
                    self._restart_at = now + delay
                    self.last_error = f"{self.name} {what} (last output: {last})"
                    self.log.error("%s; restarting in %.1fs (failure %d of %d allowed within "
                                   "%.0fs)", self.last_error, delay, len(self.policy.failures),
                                   self.policy.max_restarts, self.policy.window)
        self.bus.publish(Event(Code.PROCESS_EXITED, self.name, code))
