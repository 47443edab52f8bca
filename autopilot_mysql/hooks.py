"""User handlers, as the Autopilot pattern's onChange and Patroni's callbacks: executables in
HOOKS_DIR (default /etc/autopilot-mysql/hooks.d) that the supervisor runs on events.

    on-start         the supervisor started mysqld for the first time
    on-role-change   the node's role changed (primary, replica, unknown: fenced or electing)
    on-stop          the supervisor stops gracefully (after mysqld stopped)
    health           an extra health check, run every HOOK_HEALTH_INTERVAL seconds: while it
                     exits non-zero the node reports unhealthy (a primary then hands over as
                     after any failed check), and /status says why

A hook is every executable whose name is the event's or starts with it and a dash or dot
(`on-role-change`, `on-role-change-10-notify.sh`), run in name order, as

    HOOK EVENT ROLE CLUSTER NODE

with AUTOPILOT_EVENT, AUTOPILOT_ROLE, AUTOPILOT_PREVIOUS_ROLE, AUTOPILOT_CLUSTER and
AUTOPILOT_NODE in its environment (the container's secrets are not passed on). Each run is
bounded by HOOK_TIMEOUT (its process group is killed past it); a failure, a time-out or a
missing interpreter is logged with the hook's last words, never raised. Hooks run on threads
of their own, one event at a time in order, so a slow hook never holds up the HA loop (the
health hook on another thread, so events never wait behind it).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .config import Settings

log = logging.getLogger(__name__)

EVENTS = ("on-start", "on-role-change", "on-stop", "health")
# What a hook inherits of the supervisor's environment: never a password or token.
PASSED_ON = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "SERVICE_NAME", "NODE_NAME", "CONSUL",
             "HEALTH_PORT", "TOPOLOGY", "MYSQL_DATADIR", "MYSQL_RUNDIR")


def find(directory: Path, event: str) -> list[Path]:
    """The executables for `event` in `directory`, in name order ([] when it has none)."""
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    return [p for p in entries
            if (p.name == event or p.name.startswith((event + "-", event + ".")))
            and p.is_file() and os.access(p, os.X_OK)]


def run_one(path: Path, args: list[str], env: Mapping[str, str], timeout: float
            ) -> tuple[bool, str]:
    """Run one hook; (ok, what happened, for the log)."""
    try:
        proc = subprocess.Popen([str(path), *args], env=dict(env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as exc:
        return False, f"cannot run it: {exc} (is it executable, with a valid #! line?)"
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        out, _ = proc.communicate()
        return False, (f"killed after HOOK_TIMEOUT ({timeout:.0f}s); last output: "
                       f"{_tail(out)}")
    if proc.returncode != 0:
        return False, f"exited {proc.returncode}; last output: {_tail(out)}"
    return True, _tail(out)


def _tail(out: bytes | None) -> str:
    text = (out or b"").decode(errors="replace").strip()
    return text.splitlines()[-1][:300] if text else "(none)"


class Hooks:
    def __init__(self, directory: Path, *, cluster: str, node: str, timeout: float,
                 health_interval: float, environ: Mapping[str, str] | None = None,
                 runner: Callable[[Path, list[str], Mapping[str, str], float],
                                  tuple[bool, str]] = run_one) -> None:
        self.dir = directory
        self.cluster = cluster
        self.node = node
        self.timeout = timeout
        self.health_interval = health_interval
        src = os.environ if environ is None else environ
        self.base_env = {k: src[k] for k in PASSED_ON if k in src}
        self.runner = runner
        self.role = "unknown"
        self._queue: queue.Queue[tuple[str, str, str] | None] = queue.Queue()
        self._health: tuple[bool, str] = (True, "")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False

    @classmethod
    def for_settings(cls, s: Settings) -> Hooks:
        """A node's hooks, as its settings (HOOKS_DIR, HOOK_*) name them."""
        return cls(s.hooks_dir, cluster=s.service_name, node=s.node_name,
                   timeout=s.hook_timeout, health_interval=s.hook_health_interval)

    def start(self) -> None:
        if not self.dir.is_dir():
            log.debug("no hooks directory %s", self.dir)
        else:
            found = {e: [p.name for p in find(self.dir, e)] for e in EVENTS}
            log.info("hooks in %s: %s", self.dir, "; ".join(
                f"{e}: {', '.join(n)}" for e, n in found.items() if n) or "none")
        for target, name in ((self._events, "hooks"), (self._health_loop, "hook-health")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    # --- events ------------------------------------------------------------------------------

    def started(self, role: str = "unknown") -> None:
        """mysqld started: on-start hooks, the first time only."""
        if not self._started:
            self._started = True
            self._queue.put(("on-start", role, ""))

    def role_changed(self, role: str) -> None:
        """Called with every published role; runs on-role-change hooks when it changed."""
        if role == self.role:
            return
        previous, self.role = self.role, role
        self._queue.put(("on-role-change", role, previous))

    def stopping(self, wait: float) -> None:
        """on-stop, then wait up to `wait` seconds for every queued hook to finish."""
        self._queue.put(("on-stop", self.role, ""))
        self._queue.put(None)
        self._stop.set()
        deadline = time.monotonic() + max(0.0, wait)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def health(self) -> tuple[bool, str]:
        """The health hook's last verdict: (ok, why not)."""
        return self._health

    # --- the threads -------------------------------------------------------------------------

    def _env(self, event: str, role: str, previous: str) -> dict[str, str]:
        return {**self.base_env, "AUTOPILOT_EVENT": event, "AUTOPILOT_ROLE": role,
                "AUTOPILOT_PREVIOUS_ROLE": previous, "AUTOPILOT_CLUSTER": self.cluster,
                "AUTOPILOT_NODE": self.node}

    def _run(self, event: str, role: str, previous: str) -> bool:
        ok_all = True
        for path in find(self.dir, event):
            t0 = time.monotonic()
            ok, what = self.runner(path, [event, role, self.cluster, self.node],
                                   self._env(event, role, previous), self.timeout)
            took = time.monotonic() - t0
            if ok:
                log.info("hook %s (%s, role %s) done in %.1fs", path.name, event, role, took)
            elif event != "health":
                log.error("hook %s (%s, role %s) failed: %s", path.name, event, role, what)
            ok_all = ok_all and ok
            if not ok and event == "health":
                self._health = (False, f"the health hook {path.name} failed: {what}")
                return False
        return ok_all

    def _events(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._run(*item)
            except Exception:  # a bug here must not end the thread: later events still run
                log.exception("running the %s hooks", item[0])

    def _health_loop(self) -> None:
        while not self._stop.is_set():
            if find(self.dir, "health"):
                before = self._health[0]
                if self._run("health", self.role, ""):
                    self._health = (True, "")
                if self._health[0] != before:
                    (log.info if self._health[0] else log.error)(
                        "%s", "the health hook passes again" if self._health[0]
                        else f"{self._health[1]}: this node reports unhealthy until it passes")
            self._stop.wait(self.health_interval)
