"""The composition root and the HA loop.

`Daemon.run()` is the supervisor's whole life: onStart (startup.py), start mysqld, then one
cycle at a time (observe, `ha.decide`, log one line, act, publish a status snapshot) until a
stop is requested, then the graceful stop. The loop sleeps up to LOOP_WAIT between cycles and
wakes early on any event (a child exited, members or the leader key changed, a signal).
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import replace

from . import __version__, clusterview, election, failsafe, metrics, startup
from .api import CloneStream, HealthServer, switchover_refusal
from .backup import clone
from .backup.provision import recover_interrupted_rebuild
from .config import ClusterSettings, Settings, cluster_settings
from .dcs import Consul, best_effort
from .events import Code, Event, EventBus
from .exceptions import ConfigError, DataDirError, DCSError, MySQLError
from .ha import decide
from .hooks import Hooks
from .initdb import InitDb
from .keys import ClusterKeys
from .model import (
    Action,
    Decision,
    Member,
    NodeStatus,
    Observation,
    ProcState,
    Role,
    copy_sources,
)
from .mysql import datadir as dd
from .mysql.server import READY, FenceResult, LocalServer
from .node import LocalNode
from .peers import Peers
from .process import ManagedProcess, RestartPolicy
from .reprovision import Reprovisioner
from .snapshots import Snapshots, forget_verify_scratch
from .utils import Clock, SystemClock
from .watchdog import LeaseWatchdog, LoopStep

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
# mariadbd's words when a recovery was interrupted after it truncated the binary log
HEURISTIC = "You have to start server with --tc-heuristic-recover"
CONSUL_TIMEOUT = 1.0  # seconds one Consul call of the HA loop may take
SUMMARY_EVERY = 60.0  # an unchanged decision is logged at INFO at most this often


class Daemon:
    def __init__(self, settings: Settings, *, clock: Clock | None = None,
                 env_given: frozenset[str] = frozenset()) -> None:
        self.s = settings
        self.s_env_given = env_given  # the cluster-wide variables this environment sets
        self.clock = clock or SystemClock()
        self.step = LoopStep(self.clock)  # what the HA loop does now (the watchdog says it)
        self.bus = EventBus()
        self.stop_requested = threading.Event()
        self.started_at = self.clock.monotonic()
        self.status = NodeStatus(node=settings.node_name, started_at=self.started_at)
        self.mysql = LocalServer(settings.socket)

        # Short: a Consul that takes longer counts as unreachable this cycle (the lease rules
        # take over), instead of holding the loop (blocking watches add their wait to it).
        self.consul = Consul.for_settings(settings, timeout=CONSUL_TIMEOUT)
        self.address = startup.advertise_address(settings)
        self.peers = Peers(settings.health_port, on_change=lambda node: self.bus.publish(
            Event(Code.PEER_CHANGED, node)))
        self.agent: ManagedProcess | None = None
        self.mysqld: ManagedProcess | None = None
        self.node: LocalNode | None = None
        self.snapshots: Snapshots | None = None
        self.server_id: int | None = None
        self._fresh_sid: int | None = None  # allocated for a renewal, not yet live in mysqld
        self.members: tuple[Member, ...] = ()
        self.last_logged: tuple[str, float] = ("", 0.0)
        self.promise = failsafe.Promise()
        self.upgrade_checked = ""  # the server version mariadb-upgrade was considered for
        self.initdb = InitDb.for_settings(settings, self.consul)
        self.hooks = Hooks.for_settings(settings)
        self.api = HealthServer(settings.health_port, lambda: self.status,
                                stale_after=max(5.0, 3 * settings.loop_wait),
                                max_lag=settings.replica_max_lag, control=self._control,
                                token=settings.api_token, confirm=self._confirm_failsafe,
                                clone=self._serve_clone, metrics=self._cluster_metrics,
                                cluster=clusterview.endpoint(self.consul, settings.health_port,
                                                             "replication"))

    # --- life cycle -----------------------------------------------------------------------------

    def run(self) -> int:
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)
        self.api.start()
        self.hooks.start()
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
        forget_verify_scratch(self.s.datadir)
        if self.s.snapshots is not None:
            self.snapshots = Snapshots(self.s, self.consul, cnf=cnf)
            if dd.inspect(self.s.datadir) in (dd.DataDirState.EMPTY,
                                              dd.DataDirState.INTERRUPTED):
                self.snapshots.provision_empty(self._publish_state, self.stop_requested)
                if self.stop_requested.is_set():
                    return self._shutdown("stopped while provisioning from a snapshot")
        self.reprovisioner = Reprovisioner(self.s, self.snapshots)
        startup.init_datadir_if_needed(self.s, cnf)
        # Every start of mysqld happens without the leader lock (a node gives the lock up when
        # its mysqld exits); election.I8 decides before each start whether its crash recovery
        # may truncate commits it never durably committed, so that a crashed or crash-fenced
        # primary comes back without errant transactions, and never without an acknowledged
        # commit only it holds.
        first = self._read_cluster_before_start()
        self.initial_sync = (first.sync if first else None, first is not None)
        self.cluster_cfg = self._cluster_settings(first)
        self.gen_at_start = 0  # the node's writable generation when mysqld last started
        self.mysqld = ManagedProcess(
            "mysqld", ["mariadbd", f"--defaults-file={cnf}", *self.s.mysqld_args],
            bus=self.bus,
            extra_args=self._recovery_args, on_line=self._mysqld_line,
            policy=RestartPolicy(max_restarts=self.s.mysqld_max_restarts,
                                 window=self.s.mysqld_restart_window), clock=self.clock)
        self.mysqld.start()
        self.hooks.started()
        self.node = LocalNode(self.s, consul=self.consul, mysql=self.mysql, mysqld=self.mysqld,
                              bus=self.bus, clock=self.clock, address=self.address,
                              server_id=self.server_id, data_id=dd.data_id(self.s.datadir),
                              peers=self.peers, hard_restart=self._crash_mysqld,
                              promise=self.promise, cluster_settings=self.cluster_cfg)
        self.consul.watch(self.bus, self.stop_requested)
        if self.snapshots is not None:
            self.snapshots.start_scheduler(lambda: self.status, lambda: self.members,
                                           self.stop_requested)
        node = self.node
        assert node is not None
        LeaseWatchdog(self.s.socket, lease_end=lambda: node.lease_from + node.lease,
                      opened=lambda: node.opened, mysqld=lambda: self.mysqld,
                      crash=self._crash_mysqld, clock=self.clock,
                      stop=self.stop_requested, step=self.step).start()
        self._loop()
        return self._shutdown("stop requested")

    def _crash_mysqld(self, why: str, pid: int | None = None) -> None:
        """The fence of last resort: SIGKILL mysqld (restarted at once, read-only; its
        recovery truncates the commits that waited, never acknowledged: election.I8) and give
        up the lock, so the election decides who holds the most."""
        if self.mysqld is not None:
            self.mysqld.crash(why, pid)
        if self.node is not None:
            self.node.release_wanted = f"mysqld was crashed on purpose ({why})"
        self.bus.publish(Event(Code.LEADER_CHANGED, "fence"))

    def _mysqld_line(self, line: str) -> None:
        """Every line mysqld writes (its output thread): a volume it filled by itself, a
        recovery that truncated our binary log (election.I8), and that it is ready (the loop
        looks at once, not up to LOOP_WAIT later)."""
        if self.node:
            self.node.disk.line(line)
        if READY in line:
            self.bus.publish(Event(Code.MYSQLD_READY, "mysqld"))
        if "Successfully truncated binlog file" in line and self.node:
            self.node.identity_pending = ("mysqld's recovery truncated this node's binary log "
                                          "(what a replica acknowledged comes back from the "
                                          "primary)")

    def _renew_identity(self) -> None:
        """Before replicating again: a new server_id (startup.renew_server_id), live (SET
        GLOBAL server_id) and in my.cnf for the next start. Retried every cycle until Consul
        and mysqld both answer."""
        node = self.node
        assert node is not None
        try:
            # One allocation per renewal: a retry (mysqld not answering yet) applies the id
            # already taken rather than burning a new one every cycle.
            if self._fresh_sid is None:
                self._fresh_sid = startup.renew_server_id(self.s, self.consul,
                                                          node.identity_pending)
            sid = self._fresh_sid
            kept = self.mysql.change_server_id(sid)
        except (DCSError, MySQLError) as exc:
            log.warning("cannot take a new server_id yet (%s): not replicating meanwhile", exc)
            return
        self._fresh_sid = None
        log.info("now server_id %d, at GTID position %s", sid, kept or "(empty)")
        startup.write_cnf(self.s, sid)
        self.server_id = node.server_id = sid
        node.identity_pending = ""
        node.registered_role = None  # re-register: Consul's meta and member record name it

    def _read_cluster_before_start(self) -> ClusterKeys | None:
        """The cluster's keys before mysqld's first start: the acknowledgement set
        (election.I8) and the shared settings. A local agent may still be joining: a few
        tries, then without (None)."""
        deadline = self.clock.monotonic() + 5.0
        while True:
            try:
                return self.consul.cluster_state(consistent=True)
            except DCSError as exc:
                if self.clock.monotonic() > deadline or self.stop_requested.is_set():
                    log.warning("cannot read the cluster's keys before starting mysqld (%s): "
                                "if it did not shut down cleanly, its recovery keeps every "
                                "commit it finds (election.I8), and this node uses its own "
                                "LOOP_WAIT, SESSION_TTL, SEMI_SYNC_TIMEOUT and FAILSAFE until it "
                                "reads the cluster's", exc)
                    return None
                self.stop_requested.wait(0.5)

    def _cluster_settings(self, keys: ClusterKeys | None) -> ClusterSettings:
        """The cluster-wide settings: Consul's when it has them (each difference from this
        node's environment named once); else this environment's, written to Consul as the
        cluster's (its first boot)."""
        mine = self.s.cluster
        if keys is None:
            return mine
        if keys.config is None:
            try:
                if self.consul.write_config(mine.doc(), 0):
                    log.info("the cluster's shared settings are seeded from this node's "
                             "environment: %s (Consul %s)", mine.doc(), self.consul.keys.config)
            except DCSError as exc:
                log.warning("could not seed the cluster's settings in Consul: %s", exc)
            return mine
        try:
            theirs = cluster_settings(keys.config)
        except ConfigError as exc:
            log.error("the cluster's settings in Consul (%s) are refused, this node uses its "
                      "environment's: %s. Fix them with autopilot-mysql config set",
                      self.consul.keys.config, exc)
            return mine
        for k, v in theirs.doc().items():
            if mine.doc()[k] != v and k in self.s_env_given:
                log.warning("%s=%s in this node's environment differs from the cluster's %s "
                            "(Consul %s): the cluster's value is used. To change it for every "
                            "node: autopilot-mysql config set %s=%s", k, mine.doc()[k], v,
                            self.consul.keys.config, k, mine.doc()[k])
        return theirs

    def _recovery_args(self) -> list[str]:
        """election.I8, before every start of mysqld."""
        node = self.node
        # It was the primary in mysqld's last run (election.I8): writable since that start, or
        # so its data directory says (a crash of the whole host forgets the former).
        try:
            recorded = dd.read_node_state(self.s.datadir).get("last_role")
        except DataDirError:
            recorded = None  # unreadable: treated as a replica (it keeps what it holds)
        was_primary = (node is not None and node.opened.gen != self.gen_at_start) or \
            recorded == "primary"
        self.gen_at_start = node.opened.gen if node is not None else 0
        if node is None:
            sync, known = self.initial_sync
        else:
            sync = node.cluster.sync
            known = self.clock.monotonic() - node.dcs_ok_at < 2 * node.lease
        truncate = election.may_truncate_unacknowledged(sync, self.s.node_name, known,
                                                        was_primary)
        if self.mysqld is not None and any(HEURISTIC in line for line in self.mysqld.tail):
            # Killed in the middle of its semi-sync recovery: the binary log was already
            # truncated, InnoDB still holds the prepared transactions, and MariaDB refuses to
            # start. Finish what that recovery decided, once; mysqld then exits, and the next
            # start is a normal one.
            how = "ROLLBACK" if truncate else "COMMIT"
            log.warning("mysqld refused to start: its last recovery was interrupted and left "
                        "prepared transactions; starting it once with --tc-heuristic-recover=%s "
                        "(what that recovery had decided, election.I8)", how)
            self.mysqld.tail.clear()
            return [f"--tc-heuristic-recover={how}"]
        if truncate:
            log.info("starting mysqld with --init-rpl-role=SLAVE: if it crashed, its recovery "
                     "drops commits it never durably committed (they were never acknowledged, "
                     "or a replica holds them)")
            return ["--init-rpl-role=SLAVE"]
        log.info("starting mysqld; if it did not shut down cleanly, its recovery keeps every "
                 "commit it finds: this node %s", "may hold acknowledged commits no other node "
                 "has (it was acknowledging alone)" if known and sync is not None
                 and sync.primary == self.s.node_name else "was a replica (what it holds may "
                 "have been acknowledged)" if known and sync is not None else
                 "does not know the acknowledgement set")
        return []

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
        self.agent = startup.start_consul_agent(self.s, self.address, self.bus, self.clock)

    # --- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        node = self.node
        assert node is not None
        wait = node.cfg.loop_wait
        while not self.stop_requested.is_set():
            self.step.enter("waiting for the next cycle")
            events = self.bus.wait(wait)
            wait = node.cfg.loop_wait
            self.step.enter("handling events")
            for ev in events:
                self._on_event(ev)
            if self.stop_requested.is_set():
                break
            if self.agent is not None and self.agent.restart_due():
                self.agent.start()
            if node.identity_pending and self.mysqld is not None \
                    and self.mysqld.state == ProcState.RUNNING:
                self._renew_identity()
            self.step.enter("heartbeat")
            if not events and node.beat():
                # The lease the role checks answer on (the rest of the status stands).
                self.status = replace(self.status,
                                      lock_valid_until=node.lease_from + node.lease)
                continue
            self.step.enter("observe")
            obs = node.observe(stopping=self.stop_requested.is_set(), woken=bool(events))
            decision = decide(obs)
            if 0 < obs.promote_in < wait:
                # The new primary opens the moment the old lease surely ran out (election.I6),
                # not up to a loop period later (0.25 s of every failover, on average).
                wait = obs.promote_in
            self._log_decision(decision)
            self.step.enter(decision.action.value)
            try:
                node.act(decision, obs)
            except (MySQLError, DCSError) as exc:
                log.error("%s failed: %s", decision.action.value, exc)
                self._publish(decision=decision, obs=obs, error=str(exc))
                continue
            self.step.enter(f"after {decision.action.value}")
            self._publish(decision=decision, obs=obs)
            if node.version and node.version != self.upgrade_checked:
                self.upgrade_checked = node.version
                try:
                    startup.upgrade_if_needed(self.s, node.version)
                except DataDirError as exc:
                    log.warning("could not check whether mariadb-upgrade is due: %s", exc)
            if self.status.role == Role.PRIMARY and self.status.writable:
                self.initdb.primary_open()
            asked = node.cluster.reinit.get(obs.node)
            why: tuple[str, ...] = ()
            if asked is not None:
                why = (f"an operator asked for it (autopilot-mysql reinit, by "
                       f"{asked.get('by', '?')} at {asked.get('at', '?')}: "
                       f"{asked.get('reason') or 'no reason given'})",)
            elif (obs.errant or obs.behind) and self.s.reprovision:
                why = obs.errant or (obs.behind,)
            if why and obs.leader not in (None, obs.node) and self.mysqld is not None \
                    and self.reprovisioner.rebuild(
                        self.mysqld, why, self._publish_state,
                        newer_than=obs.gtid if obs.behind and asked is None else None,
                        donors=self._donors(obs.leader)):
                if asked is not None:
                    done = {"node": obs.node, **asked}
                    best_effort([("clear the reinit request",
                                  functools.partial(self.consul.clear_reinit, obs.node)),
                                 ("record the reinit", functools.partial(
                                     self.consul.record_history, "reinit-done", done))])
                node.errant, node.behind = (), ""
                node.data_id = dd.data_id(self.s.datadir)  # the rebuild minted a new one
                # The copy may lack our own past transactions: they come back only under a
                # server_id that is not ours any more.
                node.identity_pending = "this node was re-provisioned"

    def _donors(self, leader: str | None) -> list[tuple[str, str]]:
        """Nodes to copy from, best first: healthy replicas, then the primary."""
        return copy_sources(self.members, self.s.node_name, leader)

    def _serve_clone(self, header: str) -> tuple[int, str, CloneStream | None]:
        """GET /clone, from the HTTP thread (backup/clone.py): a copy of this node."""
        asker = clone.check(self.s.repl_password, header)
        if asker is None:
            return 403, "bad or stale signature (the nodes must share MYSQL_REPL_PASSWORD)", None
        st = self.status
        if not st.healthy or st.errant or self.mysqld is None \
                or self.mysqld.state != ProcState.RUNNING:
            return 503, f"{self.s.node_name} is not healthy: it cannot be copied now", None
        cnf = self.s.rundir / "my.cnf"
        log.info("serving a copy of this node to %s", asker)

        def stream(write: Callable[[bytes], None]) -> tuple[bool, str]:
            return clone.serve(cnf, self.s.socket, write)
        return 200, "", stream

    def _cluster_metrics(self) -> dict[str, float] | None:
        """GET /metrics, from an HTTP worker: the cluster's backups as Consul holds them."""
        return metrics.cluster_series(self.consul, self.snapshots)

    def _publish_state(self, state: str, error: str) -> None:
        self._publish(state=state, error=error)

    def _control(self, action: str, params: dict[str, str]) -> tuple[int, str]:
        """Called from the HTTP thread: validate against the last status, then hand the
        request to the loop as an event."""
        st = self.status
        to = params.get("to", "")
        leader = self.node.cluster.leader if self.node else None
        refused = switchover_refusal(
            leader=st.leader if leader is not None else None, to=to,
            members={m.node for m in st.members}, service=self.s.service_name, role="primary",
            nofailover={m.node for m in st.members if m.nofailover})
        if refused is not None or leader is None:
            return refused or (409, "there is no primary to switch over from")
        self.bus.publish(Event(Code.SWITCHOVER, "api", (leader.node, to, leader.session)))
        return 202, f"switchover from {st.leader} to {to or 'the best replica'} requested"

    def _confirm_failsafe(self, body: bytes, signature: str) -> tuple[int, str]:
        """POST /failsafe, from the HTTP thread (failsafe.py): answered from the last status."""
        st = self.status
        loop_wait = self.node.cfg.loop_wait if self.node else self.s.loop_wait
        fresh = self.clock.monotonic() - st.cycle_at < 3 * loop_wait + 1
        return failsafe.confirm(self.s.repl_password, body, signature, me=self.s.node_name,
                                consul_ok=st.consul_ok or not fresh, last_leader=st.leader,
                                promise=self.promise)

    def _on_event(self, ev: Event) -> None:
        if ev.code == Code.PROCESS_EXITED and ev.source == "mysqld" and self.node is not None:
            # mysqld restarts without the lock: its recovery may truncate unacknowledged
            # commits, which replicas may hold; the election then picks the most advanced.
            if self.node.session is not None and not self.node.release_wanted:
                self.node.release_wanted = f"mysqld exited ({ev.payload})"
        elif ev.code == Code.MEMBERS_CHANGED and isinstance(ev.payload, tuple):
            members: tuple[Member, ...] = ev.payload
            self.members = members
            if self.node is not None:
                self.node.members = members
            log.info("members of %s: %s", self.s.service_name, ", ".join(
                f"{m.node}({m.role.value}{'' if m.passing else ', failing'})"
                for m in members) or "none")
        elif ev.code == Code.SWITCHOVER and isinstance(ev.payload, tuple):
            leader, to, session = ev.payload
            try:
                self.consul.request_switchover(leader, to, session)
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
        hook_ok, hook_why = self.hooks.health()
        last_error = last_error or hook_why
        self.status = replace(
            self.status, role=decision.role if decision else self.status.role,
            state=state or self.status.state,
            healthy=bool(decision and decision.healthy and obs and obs.mysql_alive and hook_ok),
            writable=bool(obs and obs.read_only is False), mysqld=mysqld,
            replicating=bool(replica and replica.running and decision
                             and decision.action == Action.STAY_REPLICA),
            lag=replica.seconds_behind if replica else None,
            # A state-only update (a rebuild in progress) keeps what the last cycle found: a
            # primary reading "not errant" with our old data id would admit that data to its
            # acknowledgement set (nemesis seed 157636295, third run: the election then
            # blocked for good on "data replaced").
            errant=obs.errant if obs else self.status.errant,
            behind=obs.behind if obs else self.status.behind,
            data_id=self.node.data_id if self.node else "",
            disk_free=self.node.disk.free if self.node else None,
            disk_full=obs.disk_full if obs else self.status.disk_full,
            ack_set=_ack_set_summary(obs) if obs else self.status.ack_set,
            gtid_current_pos=obs.gtid if obs else self.status.gtid_current_pos,
            server_id=self.server_id,
            version=self.node.version if self.node else "",
            leader=obs.leader if obs else self.status.leader, members=self.members,
            consul_ok=obs.dcs_ok if obs else self.status.consul_ok,
            last_decision=str(decision) if decision else self.status.last_decision,
            extra={**({"snapshot": self.snapshots.state,
                       "snapshot_problem": self.snapshots.problem,
                       "binlog_archive": self.snapshots.archiver.state
                       if self.snapshots.archiver else "off"} if self.snapshots else {}),
                   **({"initdb": self.initdb.state} if self.initdb.state else {})},
            last_error=last_error,
            cycle_at=obs.observed_at if obs else self.clock.monotonic(),
            lock_valid_until=obs.lock_valid_until if obs else 0.0,
            paused=obs.paused if obs else self.status.paused, tags=tuple(self.s.tags),
            mysqld_exits=self.mysqld.exits if self.mysqld else 0,
            consul_unreachable_for=round(obs.dcs_unreachable_for, 1) if obs and not obs.dcs_ok
            else 0.0)
        if decision is not None:
            self.hooks.role_changed(self.status.role.value)

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
                if self.mysql.fence()[0] == FenceResult.WAITING:
                    # A clean shutdown would commit them (errant); crashed, the next start
                    # truncates them (never acknowledged).
                    log.warning("commits wait for acknowledgements that do not come: stopping "
                                "mysqld with SIGKILL so that they are truncated at its next "
                                "start")
                    self.mysqld.kill()
            except MySQLError as exc:
                log.warning("could not fence before stopping: %s", exc)
        release = self.node.release if self.node else (lambda: None)
        best_effort([("release the leader lock", release),
                     ("deregister from Consul", lambda: self.consul.deregister(self.s.service_id))])
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
        self.hooks.stopping(min(self.s.hook_timeout, deadline - self.clock.monotonic()
                                - (2 if self.agent else 0)))
        if self.agent is not None:
            self.agent.stop(max(1.0, deadline - self.clock.monotonic()))
        self.api.stop()
        log.info("stopped%s", "" if clean else " (not cleanly: exit status 1)")
        return 0 if clean else 1


def _ack_set_summary(o: Observation) -> dict[str, object]:
    """The acknowledgement set as /status shows it (election.py)."""
    sync = o.sync
    if sync is None:
        return {}
    return {"primary": sync.primary, "members": list(sync.names), "synced": sync.synced,
            "hwm": sync.hwm, "this_node_acknowledges": o.semi_sync_replica,
            "this_node_is_member": o.in_ack_set}
