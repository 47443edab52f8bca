"""TOPOLOGY=galera: the supervisor's loop for a Galera node (the composition root beside
daemon.py's replication loop; the decisions are galera.py's).

One cycle: observe (mysqld, wsrep status, Consul's keys and members), `galera.decide`, log one
line, act, publish a NodeStatus for the HTTP API. What it shares with replication: Consul
(dcs.py), the HTTP health table (api.py: the writer answers /primary, a Synced reader
/replica), the managed mysqld (process.py), onStart (startup.py), the fence (read_only, which
holds for every account but root@localhost).

The writer's lease (galera.G6): renewed by each successful renewal of its Consul session; a
watchdog thread fences it (read_only) once the lease runs out, even while the loop is stuck.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from dataclasses import replace

from . import __version__, clusterview, failsafe, galera, metrics, startup
from .api import HealthServer, switchover_refusal
from .config import Settings
from .dcs import Consul, MemberRecord, best_effort
from .disk import DiskWatch
from .events import Code, Event, EventBus
from .eviction import Evictor
from .exceptions import CatalogForgot, DataDirError, DCSError, MySQLError, ProcessError
from .galera import DATA, DOWN, NO_DATA, STARTING, UP, CensusDoc, GaleraObservation
from .hooks import Hooks
from .initdb import InitDb
from .keys import ClusterKeys, LeaderInfo, paused_by
from .model import Action, Decision, Member, NodeStatus, ProcState, Role
from .mysql import datadir as dd
from .mysql import wsrep
from .mysql.server import READY, FenceResult, LocalServer
from .peers import Peers
from .process import ManagedProcess, RestartPolicy
from .snapshots import Snapshots
from .utils import SystemClock
from .watchdog import LeaseWatchdog, LoopStep, Opened

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
CONSUL_TIMEOUT = 1.0
SUMMARY_EVERY = 60.0
HANDOVER_WAIT = 5.0  # G8: seconds only a switchover's target may take the writer lock
START_RETRY = 5.0  # seconds before a failed bootstrap or join is tried again
JOINER_STOP_TIMEOUT = 5.0  # G7: seconds a stuck joiner gets to stop before SIGKILL


class GaleraSupervisor:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.clock = SystemClock()
        self.step = LoopStep(self.clock)  # what the HA loop does now (the watchdog says it)
        self.bus = EventBus()
        self.stop_requested = threading.Event()
        self.status = NodeStatus(node=settings.node_name, started_at=self.clock.monotonic())
        self.mysql = LocalServer(settings.socket)
        self.consul = Consul.for_settings(settings, timeout=CONSUL_TIMEOUT)
        self.address = startup.advertise_address(settings)
        self.cfg = settings.cluster
        self.upgrade_checked = ""  # the server version mariadb-upgrade was considered for
        self.initdb = InitDb.for_settings(settings, self.consul)
        self.hooks = Hooks.for_settings(settings)
        self.api = HealthServer(settings.health_port, lambda: self.status,
                                stale_after=max(5.0, 3 * settings.loop_wait),
                                max_lag=settings.replica_max_lag, control=self._control,
                                token=settings.api_token,
                                confirm=self._confirm_failsafe,
                                clone=lambda h: (404, "not a replication cluster", None),
                                metrics=lambda: metrics.cluster_series(self.consul,
                                                                       self.snapshots),
                                cluster=clusterview.endpoint(self.consul, settings.health_port,
                                                             "galera"))
        self.mysqld: ManagedProcess | None = None
        self.agent: ManagedProcess | None = None
        self.server_id = 0
        self.cnf = settings.rundir / "my.cnf"
        self.members: tuple[Member, ...] = ()
        self.keys = ClusterKeys()
        self.local: CensusDoc | None = None  # our data's position while mysqld is down
        self.start_args: list[str] = []
        self.session: str | None = None
        self.join_session: str | None = None  # holds the join lock while we join
        self.lease_from = 0.0  # monotonic send time of our last successful session renewal
        self.opened = Opened()  # each time we lifted read_only, and on which mysqld
        self.registered_role: Role | None = None
        self.member = MemberRecord(self.consul, settings.node_name)
        self.last_writer: LeaderInfo | None = None  # the last other node seen holding the lock
        self.last_holder: str | None = None  # the last node seen holding it, this one included
        self.free_since: float | None = None  # when we first saw the writer lock free
        self.open_at = 0.0
        self.handover_seen: tuple[tuple[str, str], float] | None = None  # (from, seqno), when
        self.wsrep: wsrep.WsrepStatus | None = None
        self.non_primary_since: float | None = None
        # This mysqld run's last group view, from its log (None: none yet): a joiner says
        # nothing over SQL until its state transfer is done, and one whose donor died waits
        # for ever outside any Primary Component (G7; CI's nemesis seed 231689).
        self.view_primary: bool | None = None
        self.evicted = False  # this mysqld run was evicted (its log said so; G11)
        # The other nodes' own word (GET /status): a Primary Component exists only if one of
        # them says it serves in one now. Consul's catalog still shows members passing for
        # seconds after a power cut, and a node that joined on that started mysqld into no
        # Primary Component at all.
        self.peers = Peers(settings.health_port)
        self.promise = failsafe.Promise()  # we confirmed a writer's failsafe lease (G9)
        self.disk = DiskWatch(settings.datadir, settings.disk_min_free, self.clock)  # G10
        self.evictor = Evictor(settings.socket, self.stop_requested)  # G11
        self.snapshots: Snapshots | None = None
        self.failsafe_note = ""
        self.last_logged: tuple[str, float] = ("", 0.0)

    # --- life cycle -----------------------------------------------------------------------------

    def run(self) -> int:
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)
        self.api.start()
        self.hooks.start()
        log.info("autopilot-mysql %s starting as %s (%s), TOPOLOGY=galera, service %r, Consul "
                 "at %s", __version__, self.s.node_name, self.address, self.s.service_name,
                 self.consul.address)
        if self.s.consul_agent:
            self.agent = startup.start_consul_agent(self.s, self.address, self.bus, self.clock)
        startup.prepare_dirs(self.s)
        self._publish(state="starting")
        try:
            self.server_id = startup.ensure_server_id(
                self.s, self.consul, retry_every=2.0,
                stop_requested=self.stop_requested.is_set, sleep=self._sleep)
        except DCSError:
            return self._shutdown("stopped before this node could get a server_id")
        self.cnf = startup.write_cnf(self.s, self.server_id, self.address)
        if self.s.snapshots is not None:
            self.snapshots = Snapshots(self.s, self.consul, cnf=self.cnf)
            if dd.inspect(self.s.datadir) in (dd.DataDirState.EMPTY,
                                              dd.DataDirState.INTERRUPTED):
                # galera.G3 still holds: restored data is the cluster's own, at the snapshot's
                # seqno (a census prefers any member ahead of it; G4 refuses to go behind the
                # last bootstrap)
                self.snapshots.provision_empty(
                    lambda st, err: self._publish(state=st, error=err), self.stop_requested,
                    galera_uuid=self._recorded_uuid)
                if self.stop_requested.is_set():
                    return self._shutdown("stopped while provisioning from a snapshot")
        self.mysqld = ManagedProcess(
            "mysqld", ["mariadbd", f"--defaults-file={self.cnf}", *self.s.mysqld_args],
            bus=self.bus,
            extra_args=self._before_start, on_line=self._mysqld_line,
            policy=RestartPolicy(max_restarts=self.s.mysqld_max_restarts,
                                 window=self.s.mysqld_restart_window), clock=self.clock)
        stop = self.stop_requested
        self.consul.watch(self.bus, stop)
        LeaseWatchdog(self.s.socket, lease_end=lambda: self.lease_from + self.cfg.lease,
                      opened=lambda: self.opened, mysqld=lambda: self.mysqld,
                      crash=self._crash_mysqld, clock=self.clock, stop=stop,
                      step=self.step).start()
        self.evictor.start()
        if self.snapshots is not None:
            self.snapshots.start_scheduler(lambda: self.status, lambda: self.members, stop)
        self._loop()
        return self._shutdown("stop requested")

    def _shutdown(self, why: str) -> int:
        """Fence, give up the writer lock, leave Consul, stop mysqld cleanly (it leaves the
        component gracefully: the quorum shrinks instead of being lost), publish the position
        it stopped at for the census, stop the agent last; within STOP_TIMEOUT."""
        deadline = self.clock.monotonic() + self.s.stop_timeout - 0.5
        log.info("graceful stop (%s): fence, leave Consul, stop mysqld, within %.0fs", why,
                 self.s.stop_timeout)
        self._publish(state="stopping")
        running = self.mysqld is not None and self.mysqld.state == ProcState.RUNNING
        if running:
            try:
                self.mysql.fence()
            except MySQLError as exc:
                log.warning("could not fence before stopping: %s", exc)
        best_effort([("give up the writer lock", self._end_session),
                     ("deregister from Consul", lambda: self.consul.deregister(self.s.service_id))])
        self.mysql.close()
        clean = True
        if self.mysqld is not None and running:
            left = max(1.0, deadline - self.clock.monotonic() - (2 if self.agent else 0))
            clean = self.mysqld.stop(left)
            try:
                self._recover()
                if self.local is not None:
                    self.consul.publish_census(self.s.node_name, self._doc(self.local))
            except (DCSError, MySQLError) as exc:
                log.warning("could not publish our final position for the census: %s", exc)
        self.hooks.stopping(min(self.s.hook_timeout, deadline - self.clock.monotonic()
                                - (2 if self.agent else 0)))
        if self.agent is not None:
            self.agent.stop(max(1.0, deadline - self.clock.monotonic()))
        self.api.stop()
        log.info("stopped%s", "" if clean else " (not cleanly: exit status 1)")
        return 0 if clean else 1

    def _recorded_uuid(self) -> str:
        rec = self.consul.cluster_state(consistent=True).galera
        return rec.uuid if rec else ""

    def _end_session(self) -> None:
        if self.session is not None:
            self.consul.destroy_session(self.session)  # the writer lock goes with it
            self.session = None

    def _sleep(self, seconds: float) -> None:
        self._publish(state="waiting for Consul", error="Consul unreachable: no server_id yet")
        self.stop_requested.wait(seconds)

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stop_requested.set()
        self.bus.publish(Event(Code.SIGNAL, signal.Signals(signum).name))

    def _control(self, action: str, params: dict[str, str]) -> tuple[int, str]:
        """Called from the HTTP thread (POST /switchover[?to=NODE]): validated against the last
        view, handed to the loop as an event (galera.G8)."""
        to = params.get("to", "")
        leader = self.keys.leader
        refused = switchover_refusal(
            leader=leader.node if leader else None, to=to,
            members={m.node for m in self.members}, service=self.s.service_name, role="writer",
            nofailover={m.node for m in self.members if m.nofailover})
        if refused is not None or leader is None:
            return refused or (409, "there is no writer to switch over from")
        self.bus.publish(Event(Code.SWITCHOVER, "api", (leader.node, to, leader.session)))
        return 202, f"switchover from {leader.node} to {to or 'a Synced reader'} requested"

    def _crash_mysqld(self, why: str, pid: int | None) -> None:
        """The watchdog's last resort: mysqld restarts read-only and joins again (IST); its
        exit ends our session (observe), so the lock passes at once."""
        if self.mysqld is not None:
            self.mysqld.crash(why, pid)

    def _request_switchover(self, leader: str, to: str, session: str) -> None:
        try:
            self.consul.request_switchover(leader, to, session)
            log.info("switchover requested: from %s to %s", leader, to or "a Synced reader")
        except DCSError as exc:
            log.error("could not record the switchover request: %s", exc)

    # --- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stop_requested.is_set():
            self.step.enter("waiting for the next cycle")
            for ev in self.bus.wait(self.cfg.loop_wait):
                if ev.code == Code.MEMBERS_CHANGED and isinstance(ev.payload, tuple):
                    self.members = ev.payload
                elif ev.code == Code.SWITCHOVER and isinstance(ev.payload, tuple):
                    self._request_switchover(*ev.payload)
            if self.stop_requested.is_set():
                break
            if self.agent is not None and self.agent.restart_due():
                self.agent.start()
            self.step.enter("observe")
            obs = self.observe()
            d = galera.decide(obs)
            self._log_decision(d)
            self.step.enter(d.action.value)
            try:
                self.act(d, obs)
            except (MySQLError, DCSError, DataDirError, ProcessError) as exc:
                log.error("%s failed: %s", d.action.value, exc)
                self._publish(d, obs, error=str(exc))
                if d.action in (Action.BOOTSTRAP, Action.JOIN):
                    log.info("trying again in %.0fs", START_RETRY)
                    self.stop_requested.wait(START_RETRY)
                continue
            self.step.enter(f"after {d.action.value}")
            self._publish(d, obs)
            if obs.mysql_alive and not self.upgrade_checked:
                try:
                    self.upgrade_checked = self.mysql.vars().version
                    startup.upgrade_if_needed(self.s, self.upgrade_checked)
                except (MySQLError, DataDirError) as exc:
                    log.warning("could not check whether mariadb-upgrade is due: %s", exc)
            if self.status.role == Role.PRIMARY and self.status.writable:
                self.initdb.primary_open()
            asked = self.keys.reinit.get(self.s.node_name)
            if asked is not None and obs.synced and obs.leader not in (None, obs.node) \
                    and self.wsrep is not None and self.wsrep.cluster_size >= 2:
                self._reinit(asked)

    def _reinit(self, asked: dict[str, str]) -> None:
        """`autopilot-mysql reinit NODE` on a Synced reader with another member in its
        Primary Component: leave it cleanly, replace the data with a freshly initialized
        directory (as a new node's), and join again by a full state transfer. A kill halfway
        leaves the first-boot markers, so the next start initializes again."""
        assert self.mysqld is not None
        log.warning("RE-PROVISIONING this node: an operator asked for it (autopilot-mysql "
                    "reinit, by %s at %s: %s): leaving the cluster, then joining with new "
                    "data by a full state transfer", asked.get("by", "?"), asked.get("at", "?"),
                    asked.get("reason") or "no reason given")
        self._publish(state="re-provisioning")
        self.mysql.close()
        if not self.mysqld.stop(self.s.stop_timeout):
            log.error("mysqld did not stop cleanly for the reinit: it runs crash recovery and "
                      "joins again with its old data; the request stays for the next try")
            return
        dd.mark_pending(self.s.datadir, "reinit")
        dd.empty_dir(self.s.datadir, frozenset({dd.STATE, dd.PENDING}))
        startup.init_datadir_if_needed(self.s, self.cnf)
        best_effort([("clear the reinit request",
                      functools.partial(self.consul.clear_reinit, self.s.node_name)),
                     ("record the reinit", functools.partial(
                         self.consul.record_history, "reinit-done",
                         {"node": self.s.node_name, **asked}))])
        self.local = None  # the next cycle reads the new data's position, then joins

    def observe(self) -> GaleraObservation:
        assert self.mysqld is not None
        now = self.clock.monotonic()
        proc = self.mysqld.state
        alive, read_only, st = False, None, None
        if proc == ProcState.RUNNING:
            try:
                rows = self.mysql.execute("SHOW GLOBAL STATUS LIKE 'wsrep%%'")
                status = {str(k).lower(): str(v) for k, v in rows}
                st = wsrep.parse_status(status)
                if status.get("wsrep_evs_evict_list"):
                    # a peer's eviction we only learnt of (G11): empty it once it is gone
                    self.evictor.evicting()
                read_only = self.mysql.read_only_now()
                alive = True
            except MySQLError:
                pass
        self.wsrep = st
        dcs_ok = True
        read_at = now
        try:
            self.keys = self.consul.cluster_state(consistent=True)
            # After the answer: the lock may have been freed while the read was on its way,
            # after the previous writer's last renewal (its lease counts from that)
            read_at = self.clock.monotonic()
        except DCSError:
            dcs_ok = False
        if dcs_ok and self.session is not None:
            sent = self.clock.monotonic()
            try:
                if self.consul.renew_session(self.session):
                    self.lease_from = sent
                else:
                    log.warning("our Consul session ended (its check failed or it expired)")
                    self.session = None
            except DCSError:
                dcs_ok = False
        if not dcs_ok:
            self._failsafe_round(now)
        if dcs_ok and self.join_session is not None:
            self._keep_join_lock(bool(st and st.synced))
        k = self.keys
        leader = k.leader
        me = self.s.node_name
        if leader is not None:
            self.last_holder = leader.node
            if leader.node != me:
                self.last_writer = leader
            self.free_since = None  # counted afresh each time the lock is free again
        elif self.free_since is None:
            self.free_since = read_at
        holding = leader is not None and leader.node == me and self.session is not None \
            and leader.session == self.session
        handover = k.handover if (k.handover is not None and k.handover.from_node in (
            self.last_writer.node if self.last_writer else None, me)
            and (leader is None or holding)) else None
        handover_wait = 0.0
        if handover is not None:
            seen = (handover.from_node, handover.gtid)
            if self.handover_seen is None or self.handover_seen[0] != seen:
                self.handover_seen = (seen, now)
            handover_wait = max(0.0, self.handover_seen[1] + HANDOVER_WAIT - now)
        # Synced readers that may become the writer (NOFAILOVER ones never do)
        readers = tuple(sorted(m.node for m in self.members if m.passing and m.node != me
                               and m.role == Role.REPLICA and not m.nofailover))
        disk_full = self.disk.full()
        roomy = tuple(n for n in readers if not (self.peers.status(n, max_age=3.0) or {}).get(
            "disk_full", True)) if holding and disk_full else ()
        self.peers.want(self._addresses())
        component = any(self._in_primary(n) for n in self._addresses())
        listed = any(m.passing and m.node != me and m.role in (Role.PRIMARY, Role.REPLICA)
                     for m in self.members)
        # G7 for a joiner (mysqld runs but does not answer yet; not a bootstrap): stuck once
        # its log's last view is not Primary, or once no other member serves in a Primary
        # Component. The second is needed too: a joiner waiting for its state transfer may log
        # no view at all after its donor died (CI's nemesis seed 602005: the donor was crashed
        # by its fence while preparing the IST; the joiner's log stopped there, for good).
        joining = st is None and proc == ProcState.RUNNING \
            and "--wsrep-new-cluster" not in self.start_args
        stuck_joining = joining and (self.view_primary is False
                                     or (dcs_ok and not component and not listed))
        if (st is None or st.primary) and not stuck_joining:
            self.non_primary_since = None
        elif self.non_primary_since is None:
            self.non_primary_since = now
        known = tuple(sorted(set(k.members) | ({me} if me in k.census else set())))
        return GaleraObservation(
            node=me, mysqld=proc, mysqld_restart_in=self.mysqld.restart_in(),
            mysql_alive=alive, read_only=read_only, joining=k.galera_joining,
            check_passing=self._check_passing(dcs_ok, st),
            non_primary_for=now - self.non_primary_since if self.non_primary_since else 0.0,
            evicted=self.evicted,
            primary=bool(st and st.primary), synced=bool(st and st.synced),
            state_comment=st.state_comment if st else "",
            writer_in_component=bool(st and leader and st.has_member(leader.address)),
            local=self.local if proc != ProcState.RUNNING else None,
            published=k.census.get(me), dcs_ok=dcs_ok,
            registered=self.registered_role is not None, session=self.session,
            record=k.galera, known=known, census=k.census, component_exists=component,
            component_listed=listed,
            leader=leader.node if leader else None,
            lease_left=(self.lease_from + self.cfg.lease - now) if holding else 0.0,
            open_in=max(0.0, self.open_at - now) if holding and self._previous_may_write(st)
            else 0.0,
            forced=k.galera_force.get("node") if k.galera_force else None,
            paused=paused_by(k.pause), nofailover=self.s.nofailover,
            last_writer=self.last_holder,
            last_committed=st.last_committed if st else -1, readers=readers,
            switchover_to=self._switchover_to(holding), handover=handover,
            handover_wait=handover_wait, promised_for=max(0.0, self.promise.left()[0]),
            disk_full=disk_full, roomy_readers=roomy)

    def _failsafe_round(self, now: float) -> None:
        """G9: Consul is unreachable. While we are the writer and our lease still runs, every
        member that passed its check when Consul last answered must confirm (failsafe.py)
        for the lease to run on; otherwise it runs out and we fence, as without FAILSAFE."""
        leader = self.keys.leader
        if not self.cfg.failsafe or self.session is None or leader is None \
                or leader.session != self.session or now >= self.lease_from + self.cfg.lease:
            return
        # The catalog we last saw may predate a member's join: it can be Synced and hold a
        # session by now, so the members of our component must confirm too.
        addresses = self._addresses()
        ok, note = failsafe.lease_round(
            self.s.repl_password, me=self.s.node_name, lease=self.cfg.lease,
            members=galera.failsafe_members(
                {m.node for m in self.members if m.passing},
                self.wsrep.incoming if self.wsrep else (), addresses, self.address),
            addresses=addresses,
            port=self.s.health_port)
        if ok:
            self.lease_from = now
        if note != self.failsafe_note:
            (log.info if ok else log.warning)("Consul is unreachable; %s", note)
            self.failsafe_note = note

    def _confirm_failsafe(self, body: bytes, signature: str) -> tuple[int, str]:
        """POST /failsafe from the writer (HTTP thread), answered from our last view."""
        st = self.status
        fresh = self.clock.monotonic() - st.cycle_at < 3 * self.cfg.loop_wait + 1
        return failsafe.confirm(self.s.repl_password, body, signature, me=self.s.node_name,
                                consul_ok=st.consul_ok or not fresh, last_leader=st.leader,
                                promise=self.promise)

    def _switchover_to(self, holding: bool) -> str | None:
        """A switchover asked of us in this term ("": to any reader); one left for another
        term of a writer is deleted."""
        if not holding:
            return None
        return self.consul.switchover_for(self.keys.switchover, self.s.node_name, self.session)

    def _in_primary(self, node: str) -> bool:
        doc = self.peers.status(node, max_age=3.0)
        if doc is None or not doc.get("healthy"):
            return False
        extra = doc.get("extra")
        return isinstance(extra, dict) and str(extra.get("wsrep", "")).startswith("Primary")

    def _check_passing(self, dcs_ok: bool, st: wsrep.WsrepStatus | None) -> bool:
        """Our check, from the agent (only asked when it matters: a Synced node without a
        session; Consul refuses a session tied to a failing check)."""
        if not dcs_ok or self.session is not None or st is None or not st.synced:
            return False
        try:
            return self.consul.check_status(self.s.service_id) == "passing"
        except DCSError:
            return False

    def _keep_join_lock(self, synced: bool) -> None:
        """Renew the join lock's session while we join; end it once Synced (the next node may
        join) or when our mysqld is down and another node serves nobody yet."""
        assert self.join_session is not None
        try:
            if synced:
                self.consul.destroy_session(self.join_session)
                self.join_session = None
                log.info("joined: Synced in the Primary Component (the next node may join)")
            elif not self.consul.renew_session(self.join_session):
                self.join_session = None
        except DCSError as exc:
            log.warning("could not renew or end the join lock's session: %s", exc)

    def _previous_may_write(self, st: wsrep.WsrepStatus | None) -> bool:
        """The last other writer may still be writable (its lease) and able to commit: it is
        in our Primary Component."""
        prev = self.last_writer
        return prev is not None and st is not None and st.has_member(prev.address)

    def act(self, d: Decision, o: GaleraObservation) -> None:
        a = d.action
        if a == Action.RECOVER:
            self._recover()
        elif a == Action.PUBLISH_POSITION:
            if o.mysqld == ProcState.RUNNING and self.wsrep is not None:
                self.consul.publish_census(o.node, {"state": UP, "uuid": self.wsrep.uuid,
                                                    "seqno": self.wsrep.last_committed,
                                                    "data": DATA})
                self._first_synced(o)
            elif self.local is not None:
                self.consul.publish_census(o.node, self._doc(self.local))
        elif a == Action.JOIN:
            if self.join_session is None:
                self.join_session = self._create_session(
                    name=f"autopilot-mysql {o.node} (galera join)", ttl=15, service_id=None)
            if not self.consul.acquire_join(self.join_session, o.node):
                log.info("another node took the join lock first: joining after it")
                return
            self._start(o, bootstrap=False)
        elif a == Action.BOOTSTRAP:
            self._bootstrap(o)
        elif a == Action.LEAVE and self.mysqld is not None:
            # Clean: grastate.dat gets our position. A joiner that lost its donor ignores
            # SIGTERM (it waits for the transfer): its data is its old position, or what
            # --wsrep-recover finds, or, mid-SST, none; no need to wait the full timeout.
            self.mysqld.stop(self.s.stop_timeout if o.mysql_alive
                             else min(self.s.stop_timeout, JOINER_STOP_TIMEOUT))
            self.consul.record_history("galera-left-disk-full" if o.disk_full else
                                       "galera-left-evicted" if o.evicted else
                                       "galera-left-for-census", {"node": o.node,
                                                                  "reason": d.reason})
        elif a == Action.REGISTER:
            self._register(d.role)
        elif a == Action.CREATE_SESSION:
            self.session = self._create_session(
                name=f"autopilot-mysql {o.node} (galera writer)", ttl=self.cfg.session_ttl,
                service_id=self.s.service_id)
            self.lease_from = self.clock.monotonic()
        elif a == Action.HAND_OVER and self.session is not None:
            fenced, killed = self._fence()
            if not fenced:
                return  # no handover: mysqld restarts read-only, our session ends with it
            rows = self.mysql.execute("SHOW GLOBAL STATUS LIKE 'wsrep_last_committed'")
            seqno = str(rows[0][1]) if rows else str(o.last_committed)
            to = o.switchover_to if o.switchover_to is not None else (
                o.roomy_readers[0] if o.roomy_readers else "")  # G10: to a reader with room
            self.consul.hand_over(self.session, o.node, seqno, to)
            log.info("switchover: fenced (%d client connection(s) dropped) at seqno %s and "
                     "released the writer lock to %s", killed, seqno, to or "a Synced reader")
            self.consul.record_history("galera-switchover", {
                "from": o.node, "to": to, "seqno": seqno, "reason": d.reason})
        elif a == Action.REJECT_SWITCHOVER:
            self.consul.clear_switchover()
            log.error("%s", d.reason)
        elif a == Action.ACQUIRE_LOCK and self.session is not None:
            if self.consul.acquire_writer(self.session, o.node, self.address):
                # The previous writer fences itself once its lease runs out (its session is
                # gone); until then only its absence from our Primary Component proves it
                # cannot commit (observe: open_in).
                since = self.free_since or self.clock.monotonic()
                self.open_at = since + self.cfg.lease + galera.LEASE_MARGIN
                if o.handover is not None:  # G8: the previous writer fenced itself first
                    self.open_at = 0.0
                prev = self.last_writer
                log.info("took the writer lock%s", "" if prev is None else
                         f" after {prev.node}")
                self.bus.publish(Event(Code.LEADER_CHANGED, "self"))
        elif a == Action.PROMOTE:
            if o.handover is not None:  # G8: never trusted again, before we open
                self.consul.clear_handover()
            # The decision read the lease at the start of the cycle; Consul's timeouts and a
            # failsafe round may since have used it up (the watchdog had fenced already).
            if self.clock.monotonic() >= self.lease_from + self.cfg.lease - 0.1:
                log.warning("our writer lease ran out while opening: not opening for writes")
                return
            self.mysql.set_read_only(False)
            # After lifting it: the watchdog looks again (watchdog.py)
            self.opened = Opened(self.opened.gen + 1, self.mysqld.pid if self.mysqld else None)
            log.info("this node is the writer: read_only OFF")
            prev = self.last_writer
            self.consul.record_promotion_soon("galera-writer", {
                "node": o.node, "previous": prev.node if prev else "",
                "how": "switchover" if o.handover is not None else "election",
                "position": f"seqno {o.last_committed}", "reason": d.reason})
        elif a == Action.FENCE:
            self._fence()
        elif a == Action.RELEASE and self.session is not None:
            self.consul.release_leader(self.session)
        elif a == Action.DEPOSE and self.keys.leader is not None:
            self.consul.destroy_session_of(self.keys.leader.session)
            self.consul.record_history("galera-writer-deposed", {
                "node": self.keys.leader.node, "by": o.node, "reason": d.reason})
        if d.role != Role.UNKNOWN and self.registered_role is not None \
                and d.role != self.registered_role and o.dcs_ok:
            self._register(d.role)
        elif o.dcs_ok and self.member.gone(o.node in self.keys.members):
            self._register(self.registered_role or d.role)

    # --- actions --------------------------------------------------------------------------------

    def _fence(self) -> tuple[bool, int]:
        """read_only on, clients dropped: (fenced in place, connections dropped). When SET
        read_only cannot finish (it waits for commits in progress, and they do not finish: a
        full volume), mysqld is crashed instead: it restarts read-only and joins again, and
        its exit ends our session. Never reported as fenced when it is not (a handover that
        trusted it let the next writer open beside a writable one: nemesis seed 32187)."""
        result, killed = self.mysql.fence()
        if result == FenceResult.WAITING:
            log.error("could not fence: SET read_only waits behind commits that do not finish "
                      "(a full data volume?); crashing mysqld so that it restarts read-only")
            self._crash_mysqld("read_only could not be set: commits in progress do not "
                               "finish", None)
            return False, 0
        log.warning("fenced: read_only ON, %d client connection(s) dropped", killed)
        return True, killed

    def _recover(self) -> None:
        """Our data's Galera position while mysqld is down (galera.G3's input)."""
        datadir = self.s.datadir
        me = self.s.node_name
        if self.session is not None:
            # mysqld is down: the writer lock (if ours) must not wait for Consul's check
            try:
                self._end_session()
            except DCSError as exc:
                log.warning("could not end our Consul session: %s (its check fails soon)", exc)
        if dd.inspect(datadir) == dd.DataDirState.EMPTY:
            self.local = CensusDoc(me, DOWN)
        elif wsrep.sst_interrupted(datadir):
            log.warning("a state transfer into %s did not finish: it holds no usable data and "
                        "joins by a full state transfer", datadir)
            self.local = CensusDoc(me, DOWN)
        else:
            gs = wsrep.read_grastate(datadir)
            pos = gs.position if gs else None
            how = "grastate.dat"
            if pos is None or not pos.valid:
                t0 = time.monotonic()
                pos, tail = wsrep.recover_position(self.cnf)
                how = f"mariadbd --wsrep-recover ({time.monotonic() - t0:.1f}s)"
                if pos is None:
                    log.error("mariadbd --wsrep-recover did not say where this node's data "
                              "stands: %s", tail)
            if pos is not None and pos.valid:
                self.local = CensusDoc(me, DOWN, pos.uuid, pos.seqno, DATA)
            else:
                self.local = CensusDoc(me, DOWN, pos.uuid if pos else "", -1, NO_DATA)
            log.info("this node's Galera position: %s (from %s)", self.local.position, how)

    def _doc(self, c: CensusDoc) -> dict[str, object]:
        return {"state": c.state, "uuid": c.uuid, "seqno": c.seqno, "data": c.data}

    def _bootstrap(self, o: GaleraObservation) -> None:
        """galera.G1/G3-G5: win the compare-and-set, then start a new Primary Component."""
        local = self.local
        assert local is not None
        rec = o.record
        forced = o.forced == o.node
        seqno = local.seqno if local.data == DATA else -1
        uuid = rec.uuid if rec and rec.uuid else (local.uuid if local.data == DATA else "")
        doc = {"uuid": uuid, "seqno": seqno, "epoch": (rec.epoch + 1) if rec else 1,
               "by": o.node, "forced": forced}
        checks = {} if forced or rec is None else {
            n: o.census[n].index for n in o.known if n in o.census}
        if not self.consul.claim_bootstrap(doc, rec.index if rec else 0, checks):
            log.info("another node's bootstrap decision came first (the record or the census "
                     "changed): deciding again")
            return
        if forced:
            self.consul.clear_force_bootstrap()
        self.consul.record_history("galera-bootstrap", {**doc, "census": {
            n: c.position for n, c in o.census.items()}})
        log.warning("bootstrapping the Galera cluster from this node at %s (epoch %d%s)",
                    local.position, doc["epoch"], ", forced by an operator" if forced else "")
        if dd.inspect(self.s.datadir) in (dd.DataDirState.EMPTY, dd.DataDirState.INTERRUPTED):
            startup.init_datadir_if_needed(self.s, self.cnf)  # with the SST account
        self._start(o, bootstrap=True)

    def _start(self, o: GaleraObservation, bootstrap: bool) -> None:
        assert self.mysqld is not None
        local = self.local
        if local is not None:
            # Published first: from now on our data may change, so the census must not
            # count this node as down at its old position.
            self.consul.publish_census(o.node, {**self._doc(local), "state": STARTING})
            if local.data == DATA:
                wsrep.write_grastate(self.s.datadir, wsrep.Position(local.uuid, local.seqno),
                                     safe_to_bootstrap=bootstrap)
        if wsrep.forget_primary_view(self.s.datadir):
            log.info("removed gvwstate.dat: only the supervisor decides who forms a Primary "
                     "Component (pc.recovery is off)")
        if bootstrap:
            self.start_args = ["--wsrep-new-cluster", "--wsrep-cluster-address=gcomm://"]
        else:
            peers = sorted(set(self._addresses().values()))
            self.start_args = [f"--wsrep-cluster-address=gcomm://{','.join(peers)}"]
            # A donor is Desynced, so it stops serving (and a writer fences): prefer Synced
            # readers; the trailing comma lets Galera fall back to any member.
            readers = sorted(m.node for m in self.members if m.passing and m.role == Role.REPLICA
                             and m.node != o.node)
            if readers:
                self.start_args.append(f"--wsrep-sst-donor={','.join(readers)},")
        log.info("starting mysqld: %s", " ".join(self.start_args))
        self.local = None
        self.view_primary = None
        self.evicted = False
        self.mysqld.start()
        self.hooks.started()

    def _first_synced(self, o: GaleraObservation) -> None:
        """In a Primary Component for the first time since mysqld started: record the new
        cluster's UUID (first bootstrap), and mark a data directory a state transfer filled."""
        rec = o.record
        if rec is None and self.wsrep is not None and self.wsrep.uuid and self.wsrep.synced:
            # G12: Consul lost the record while the cluster runs.
            doc = {"uuid": self.wsrep.uuid, "seqno": self.wsrep.last_committed, "epoch": 1,
                   "by": o.node, "forced": False}
            if self.consul.claim_bootstrap(doc, 0, {}):
                self.consul.record_history("galera-record-restored", doc)
                log.warning("Consul held no record of the Galera cluster (its data lost, or "
                            "the key deleted): recorded it again from this running member: "
                            "%s, a later bootstrap starts from seqno %d or more",
                            self.wsrep.uuid, self.wsrep.last_committed)
        if rec is not None and not rec.uuid and rec.by == o.node and self.wsrep is not None:
            doc = {"uuid": self.wsrep.uuid, "seqno": rec.seqno, "epoch": rec.epoch,
                   "by": rec.by, "forced": rec.forced}
            if self.consul.claim_bootstrap(doc, rec.index, {}):
                log.info("recorded the new Galera cluster %s in Consul", self.wsrep.uuid)
        if dd.inspect(self.s.datadir) != dd.DataDirState.INITIALIZED:
            # A state transfer replaced the directory's contents, our markers included.
            state = dd.read_node_state(self.s.datadir)
            dd.write_node_state(self.s.datadir, {**state, "server_id": self.server_id,
                                                 "node": o.node})
            dd.mark_done(self.s.datadir, "joined by state transfer")

    def _before_start(self) -> list[str]:
        """Before every start of mysqld (ours, or a restart after a crash): the arguments, and
        no stale state transfer pid file."""
        if wsrep.forget_sst_pid(self.s.datadir):
            log.info("removed %s, left by a state transfer that was killed", wsrep.SST_PID)
        return self.start_args

    def _mysqld_line(self, line: str) -> None:
        """Every line of mysqld's output (its output thread)."""
        self.disk.line(line)
        if READY in line:
            self.bus.publish(Event(Code.MYSQLD_READY, "mysqld"))
        lost = wsrep.nonlive_peers(line)
        if lost:
            self.evictor.lost(lost)
        if wsrep.evicted(line):
            self.evicted = True
        if wsrep.evicting(line):
            self.evictor.evicting()
        view = wsrep.component_of(line)
        if view is not None:
            self.view_primary = view
        if view is not None or wsrep.view_processed(line):
            # Wake the loop: a member left or joined (a writer to depose, a lock to take); once
            # more when mysqld processed the view (its status says so from then on)
            self.bus.publish(Event(Code.VIEW_CHANGED, "mysqld", view))

    def _create_session(self, *, name: str, ttl: float, service_id: str | None) -> str:
        try:
            return self.consul.create_session(name=name, ttl=ttl, service_id=service_id)
        except CatalogForgot:
            self.member.forget()  # its keys may be gone with the catalog
            self.consul.resync(lambda: self._register(self.registered_role or Role.UNKNOWN),
                               self.clock.monotonic())
            raise

    def _register(self, role: Role) -> None:
        self.consul.register(
            service_id=self.s.service_id, address=self.address, port=3306,
            health_url=f"http://{self.address}:{self.s.health_port}/health", role=role,
            meta={"node": self.s.node_name, "server_id": str(self.server_id),
                  "autopilot": __version__, "topology": "galera",
                  **{f"tag_{k}": v for k, v in self.s.tags.items()}})
        record = {"server_id": str(self.server_id), "address": self.address}
        self.member.write(record)
        if self.registered_role != role:
            log.info("registered in Consul as %s with tag %s", self.s.service_id, role.value)
        self.registered_role = role

    def _addresses(self) -> dict[str, str]:
        out = {n: r["address"] for n, r in self.keys.members.items() if r.get("address")}
        out.update({m.node: m.address for m in self.members if m.address})
        out.pop(self.s.node_name, None)
        return out

    # --- status ---------------------------------------------------------------------------------

    def _log_decision(self, d: Decision) -> None:
        text = str(d)
        now = self.clock.monotonic()
        if text != self.last_logged[0] or now - self.last_logged[1] >= SUMMARY_EVERY:
            log.info("%s", text)
            self.last_logged = (text, now)
        else:
            log.debug("%s", text)

    def _publish(self, d: Decision | None = None, o: GaleraObservation | None = None, *,
                 state: str | None = None, error: str = "") -> None:
        mysqld = self.mysqld.state if self.mysqld else ProcState.STOPPED
        st = self.wsrep
        holding = bool(o and o.leader == o.node)
        hook_ok, hook_why = self.hooks.health()
        self.status = replace(
            self.status, role=d.role if d else self.status.role,
            state=state or ("running" if o and o.mysql_alive else "degraded"),
            healthy=bool(d and d.healthy and o and o.mysql_alive and hook_ok),
            writable=bool(o and o.read_only is False), mysqld=mysqld,
            replicating=bool(o and o.synced and d and d.role == Role.REPLICA),
            lag=0 if o and o.synced else None,
            gtid_current_pos=f"{st.uuid}:{st.last_committed}" if st else (
                self.local.position if self.local else ""),
            server_id=self.server_id or None, leader=o.leader if o else self.status.leader,
            members=self.members, consul_ok=bool(o and o.dcs_ok),
            last_decision=str(d) if d else self.status.last_decision,
            extra={"topology": "galera",
                   **({"initdb": self.initdb.state} if self.initdb.state else {}),
                   **({"snapshot": self.snapshots.state} if self.snapshots else {}),
                   "wsrep": (f"{st.cluster_status}, {st.state_comment}, size "
                             f"{st.cluster_size}") if st else "mysqld down"},
            disk_free=self.disk.free, disk_full=o.disk_full if o else self.status.disk_full,
            last_error=error or hook_why, cycle_at=self.clock.monotonic(),
            lock_valid_until=(self.lease_from + self.cfg.lease) if holding else 0.0,
            paused=o.paused if o else self.status.paused, tags=tuple(self.s.tags),
            mysqld_exits=self.mysqld.exits if self.mysqld else 0)
        if d is not None:
            self.hooks.role_changed(self.status.role.value)
