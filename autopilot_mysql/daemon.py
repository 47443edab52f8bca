"""The composition root and the HA loop.

`Daemon.run()` is the supervisor's whole life: onStart (startup.py), start mysqld, then one
cycle at a time (observe, `ha.decide`, log one line, act, publish a status snapshot) until a
stop is requested, then the graceful stop. The loop sleeps up to LOOP_WAIT between cycles and
wakes early on any event (a child exited, members or the leader key changed, a signal).
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import threading
from dataclasses import replace

from . import __version__, startup
from .api import HealthServer
from .backup.provision import recover_interrupted_rebuild
from .config import Settings
from .dcs import Consul, Watcher, agent_config
from .events import Code, Event, EventBus
from .exceptions import DCSError, MySQLError
from .ha import decide
from .model import Action, Decision, Member, NodeStatus, Observation, ProcState
from .mysql import datadir as dd
from .mysql.server import LocalServer
from .node import LocalNode
from .process import ManagedProcess, RestartPolicy
from .snapshots import Snapshots
from .utils import Clock, SystemClock

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
SUMMARY_EVERY = 60.0  # an unchanged decision is logged at INFO at most this often


class Daemon:
    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.s = settings
        self.clock = clock or SystemClock()
        self.bus = EventBus()
        self.stop_requested = threading.Event()
        self.started_at = self.clock.monotonic()
        self.status = NodeStatus(node=settings.node_name, started_at=self.started_at)
        self.mysql = LocalServer(settings.socket)
        consul_host, consul_port = settings.consul_endpoint
        self.consul = Consul(consul_host, consul_port, settings.service_name)
        self.address = startup.advertise_address(settings)
        self.agent: ManagedProcess | None = None
        self.mysqld: ManagedProcess | None = None
        self.node: LocalNode | None = None
        self.snapshots: Snapshots | None = None
        self.server_id: int | None = None
        self.members: tuple[Member, ...] = ()
        self.last_logged: tuple[str, float] = ("", 0.0)
        self.api = HealthServer(settings.health_port, lambda: self.status,
                                stale_after=max(5.0, 3 * settings.loop_wait),
                                max_lag=settings.replica_max_lag, control=self._control,
                                token=settings.api_token)

    # --- life cycle -----------------------------------------------------------------------------

    def run(self) -> int:
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)
        self.api.start()
        log.info("autopilot-mysql %s starting as %s (%s), service %r, Consul at %s%s",
                 __version__, self.s.node_name, self.address, self.s.service_name,
                 self.consul.address, " via a local agent" if self.s.consul_agent else "")
        if self.s.consul_agent:
            self._start_agent()
        startup.prepare_dirs(self.s)
        self._publish(state="starting")
        try:
            self.server_id = startup.ensure_server_id(
                self.s, self.consul, retry_every=2.0,
                stop_requested=self._stop_is_requested, sleep=self._wait_for_consul)
        except DCSError:
            return self._shutdown("stopped before this node could get a server_id")
        cnf = startup.write_cnf(self.s, self.server_id)
        self._publish(state="initializing")
        recover_interrupted_rebuild(self.s.datadir)
        if self.s.snapshots is not None:
            self.snapshots = Snapshots(self.s, self.consul, cnf=cnf)
            if dd.inspect(self.s.datadir) in (dd.DataDirState.EMPTY,
                                              dd.DataDirState.INTERRUPTED):
                self.snapshots.provision_empty(self._publish_state, self.stop_requested)
                if self.stop_requested.is_set():
                    return self._shutdown("stopped while provisioning from a snapshot")
        startup.init_datadir_if_needed(self.s, cnf)
        self.mysqld = ManagedProcess(
            "mysqld", ["mariadbd", f"--defaults-file={cnf}"], bus=self.bus,
            policy=RestartPolicy(max_restarts=self.s.mysqld_max_restarts,
                                 window=self.s.mysqld_restart_window), clock=self.clock)
        self.mysqld.start()
        self.node = LocalNode(self.s, consul=self.consul, mysql=self.mysql, mysqld=self.mysqld,
                              bus=self.bus, clock=self.clock, address=self.address,
                              server_id=self.server_id)
        self._start_watchers()
        if self.snapshots is not None:
            self.snapshots.start_scheduler(lambda: self.status, lambda: self.members,
                                           self.stop_requested)
        threading.Thread(target=self._fence_watchdog, name="fence-watchdog",
                         daemon=True).start()
        self._loop()
        return self._shutdown("stop requested")

    def _fence_watchdog(self) -> None:
        """Independent of the loop (which may be stuck in a slow Consul call, or was paused
        with the whole process): while this node is writable, fence it as soon as no session
        renewal has succeeded for FENCE_AFTER. Checked every 100 ms over its own connection;
        the loop reopens for writes if the lock turns out to be still ours."""
        node = self.node
        assert node is not None
        own = LocalServer(self.s.socket, connect_timeout=0.5, read_timeout=1.0)
        fenced_at = 0.0
        while not self.stop_requested.wait(0.1):
            now = self.clock.monotonic()
            stale = now - node.session_renewed_at > node.fence_after
            if stale and self.status.writable and now - fenced_at > 1.0:
                try:
                    killed = own.fence()
                    fenced_at = now
                    log.warning("watchdog: no session renewal for %.1fs while writable: "
                                "fenced (read_only ON, %d connection(s) dropped)",
                                now - node.session_renewed_at, killed)
                except MySQLError as exc:
                    log.error("watchdog: could not fence: %s", exc)

    def _on_signal(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stop_requested.set()
        self.bus.publish(Event(Code.SIGNAL, name))

    def _wait_for_consul(self, seconds: float) -> None:
        self._publish(state="waiting for Consul", error="Consul unreachable: no server_id yet")
        self.stop_requested.wait(seconds)

    def _stop_is_requested(self) -> bool:
        return self.stop_requested.is_set()

    def _start_agent(self) -> None:
        consul_bin = shutil.which("consul")
        if not consul_bin:
            raise DCSError("CONSUL_AGENT is set but no `consul` binary is on PATH; install "
                           "it in the image or unset CONSUL_AGENT")
        adir = self.s.rundir / "consul"
        (adir / "data").mkdir(parents=True, exist_ok=True)
        cfg = adir / "agent.json"
        cfg.write_text(json.dumps(agent_config(
            node_name=self.s.node_name, bind=self.address, join=[self.s.consul_host],
            data_dir=str(adir / "data")), indent=1))
        self.agent = ManagedProcess("consul-agent", [consul_bin, "agent",
                                                     f"-config-file={cfg}"],
                                    bus=self.bus, clock=self.clock,
                                    policy=RestartPolicy(max_restarts=1000, window=60))
        self.agent.start()

    def _start_watchers(self) -> None:
        stop = self.stop_requested
        Watcher("members-watch", lambda i: self.consul.members(index=i, wait="20s"), self.bus,
                Code.MEMBERS_CHANGED, stop).start()
        Watcher("keys-watch", lambda i: self.consul.watch_keys(i, "20s"), self.bus,
                Code.LEADER_CHANGED, stop).start()

    # --- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        node = self.node
        assert node is not None
        while not self.stop_requested.is_set():
            for ev in self.bus.wait(self.s.loop_wait):
                self._on_event(ev)
            if self.stop_requested.is_set():
                break
            if self.agent is not None and self.agent.restart_due():
                self.agent.start()
            obs = node.observe(stopping=self.stop_requested.is_set())
            decision = decide(obs)
            self._log_decision(decision)
            try:
                node.act(decision, obs)
            except (MySQLError, DCSError) as exc:
                log.error("%s failed: %s", decision.action.value, exc)
                self._publish(decision=decision, obs=obs, error=str(exc))
                continue
            self._publish(decision=decision, obs=obs)
            if (self.snapshots is not None and self.s.snapshots is not None
                    and self.s.snapshots.reprovision and obs.errant
                    and obs.leader not in (None, obs.node) and self.mysqld is not None
                    and self.snapshots.rebuild(self.mysqld, obs.errant, self._publish_state)):
                node.errant = ()

    def _publish_state(self, state: str, error: str) -> None:
        self._publish(state=state, error=error)

    def _control(self, action: str, params: dict[str, str]) -> tuple[int, str]:
        """Called from the HTTP thread: validate against the last status, then hand the
        request to the loop as an event."""
        st = self.status
        to = params.get("to", "")
        if st.leader is None:
            return 409, "there is no primary to switch over from"
        if to and to not in {m.node for m in st.members}:
            return 404, f"{to} is not a member of {self.s.service_name}"
        if to == st.leader:
            return 409, f"{to} is already the primary"
        self.bus.publish(Event(Code.SWITCHOVER, "api", (st.leader, to)))
        return 202, f"switchover from {st.leader} to {to or 'the best replica'} requested"

    def _on_event(self, ev: Event) -> None:
        if ev.code == Code.MEMBERS_CHANGED and isinstance(ev.payload, tuple):
            members: tuple[Member, ...] = ev.payload
            self.members = members
            if self.node is not None:
                self.node.members = members
            log.info("members of %s: %s", self.s.service_name, ", ".join(
                f"{m.node}({m.role.value}{'' if m.passing else ', failing'})"
                for m in members) or "none")
        elif ev.code == Code.SWITCHOVER and isinstance(ev.payload, tuple):
            leader, to = ev.payload
            try:
                self.consul.request_switchover(leader, to)
                log.info("switchover from %s to %s requested", leader, to or "the best replica")
            except DCSError as exc:
                log.error("could not request the switchover: %s", exc)
        elif ev.code == Code.SIGNAL:
            if ev.source in ("SIGTERM", "SIGINT"):
                log.info("%s received: stopping gracefully (within %.0fs)", ev.source,
                         self.s.stop_timeout)
            else:
                log.info("%s received: current status %s", ev.source, self.status.last_decision)

    def _log_decision(self, d: Decision) -> None:
        text = str(d)
        now = self.clock.monotonic()
        last_text, last_at = self.last_logged
        if text != last_text or now - last_at >= SUMMARY_EVERY:
            log.info("%s", text)
            self.last_logged = (text, now)
        else:
            log.debug("%s", text)

    def _publish(self, *, state: str | None = None, decision: Decision | None = None,
                 obs: Observation | None = None, error: str = "") -> None:
        mysqld = self.mysqld.state if self.mysqld else ProcState.STOPPED
        replica = obs.replica if obs else None
        last_error = error or (self.mysqld.last_error if self.mysqld and mysqld in (
            ProcState.FAILED, ProcState.BACKOFF) else "")
        if decision is not None and obs is not None:
            state = ("failed" if mysqld == ProcState.FAILED else
                     "running" if obs.mysql_alive else "degraded")
        self.status = replace(
            self.status, role=decision.role if decision else self.status.role,
            state=state or self.status.state,
            healthy=bool(decision and decision.healthy and obs and obs.mysql_alive),
            writable=bool(obs and obs.read_only is False), mysqld=mysqld,
            replicating=bool(replica and replica.running and decision
                             and decision.action == Action.STAY_REPLICA),
            lag=replica.seconds_behind if replica else None,
            errant=obs.errant if obs else (),
            gtid_current_pos=obs.gtid if obs else self.status.gtid_current_pos,
            server_id=self.server_id,
            version=self.node.version if self.node else "",
            leader=obs.leader if obs else self.status.leader, members=self.members,
            last_decision=str(decision) if decision else self.status.last_decision,
            extra={"snapshot": self.snapshots.state} if self.snapshots else {},
            last_error=last_error,
            cycle_at=obs.observed_at if obs else self.clock.monotonic(),
            lock_valid_until=obs.lock_valid_until if obs else 0.0)

    # --- graceful stop ----------------------------------------------------------------------

    def _shutdown(self, why: str) -> int:
        """Fence, leave Consul, stop mysqld cleanly, stop the agent last; all within
        STOP_TIMEOUT (what is still running past it is killed)."""
        deadline = self.clock.monotonic() + self.s.stop_timeout - 0.5
        self._publish(state="stopping")
        log.info("graceful stop (%s): fence, leave Consul, stop mysqld, within %.0fs", why,
                 self.s.stop_timeout)
        if self.mysqld is not None and self.mysqld.state == ProcState.RUNNING:
            try:
                self.mysql.fence()
            except MySQLError as exc:
                log.warning("could not fence before stopping: %s", exc)
        release = self.node.release if self.node else (lambda: None)
        for what, fn in (("release the leader lock", release),
                         ("deregister from Consul",
                          lambda: self.consul.deregister(self.s.service_id))):
            try:
                fn()
            except DCSError as exc:
                log.warning("could not %s: %s (Consul will expire it)", what, exc)
        self.mysql.close()
        clean = True
        if self.mysqld is not None:
            left = max(1.0, deadline - self.clock.monotonic() - (2 if self.agent else 0))
            clean = self.mysqld.stop(left)
            if clean:
                log.info("mysqld shut down cleanly")
            else:
                log.error("mysqld was killed at the STOP_TIMEOUT (%.0fs): InnoDB will run crash "
                          "recovery at the next start. Raise STOP_TIMEOUT (and the "
                          "container's stop grace period) if this repeats", self.s.stop_timeout)
        if self.agent is not None:
            self.agent.stop(max(1.0, deadline - self.clock.monotonic()))
        self.api.stop()
        log.info("stopped%s", "" if clean else " (not cleanly: exit status 1)")
        return 0 if clean else 1
