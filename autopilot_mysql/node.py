"""The local node's side of each HA cycle: observe (mysqld, Consul, replication, election) into
one Observation, and carry out the Decision that `ha.decide` returns. The daemon owns the loop
and the life cycle; this class owns the cluster-facing state between cycles (session, election
bookkeeping, errant transactions)."""

from __future__ import annotations

import logging

from . import __version__, gtid
from .config import Settings
from .dcs import Consul, LeaderInfo
from .events import Code, Event, EventBus
from .exceptions import DCSError, MySQLError
from .model import Action, Decision, Member, Observation, ProcState, Replication, Role
from .mysql.server import LocalServer, old_primary_cannot_write
from .process import ManagedProcess
from .utils import Clock

log = logging.getLogger(__name__)
# Seconds to apply the relay log before publishing the position actually applied (shorter
# than the SQL connection's read timeout, so a slow drain never fails the whole action).
DRAIN_TIMEOUT = 2.0


class LocalNode:
    def __init__(self, settings: Settings, *, consul: Consul, mysql: LocalServer,
                 mysqld: ManagedProcess, bus: EventBus, clock: Clock, address: str,
                 server_id: int) -> None:
        self.s = settings
        self.consul = consul
        self.mysql = mysql
        self.mysqld = mysqld
        self.bus = bus
        self.clock = clock
        self.address = address
        self.server_id = server_id
        self.fence_after = 2 * settings.loop_wait + 1.0
        self.election_timeout = 2 * settings.loop_wait + 2.0
        self.version = ""
        self.gtid = ""
        self.replica: Replication | None = None
        self.session: str | None = None
        self.session_renewed_at = 0.0
        self.dcs_ok_at = clock.monotonic()
        self.registered_role: Role | None = None
        self.members: tuple[Member, ...] = ()
        self.leader: LeaderInfo | None = None
        self.last_leader: str | None = None  # the last other node seen holding the lock
        self.last_leader_address: str | None = None
        self.old_primary_fenced = False  # proven unable to write (refused, or read-only)
        self.election_started: float | None = None
        self.drained = False
        self.published: str | None = None
        self.errant: tuple[str, ...] = ()
        self.relay_pending = False
        self.switchover: dict[str, str] | None = None
        self.handover: dict[str, str] | None = None
        self.handing_over = False
        self.async_primary: dict[str, str] | None = None
        self.yes_tx_baseline: int | None = None  # Rpl_semi_sync_master_yes_tx when marked

    # --- observe --------------------------------------------------------------------------------

    def observe(self, stopping: bool) -> Observation:
        now = self.clock.monotonic()
        alive, read_only = False, None
        if self.mysqld.state == ProcState.RUNNING:
            try:
                v = self.mysql.vars()
                alive, read_only, self.version = True, v.read_only, v.version
                self.replica = self.mysql.replica_status()
                # A semi-sync replica acknowledges what it has *received*: an acknowledged
                # commit may sit in its relay log, unapplied. Its claim in an election is
                # therefore applied + received, and it opens only once all is applied.
                applied = gtid.parse(v.gtid_current_pos)
                received = gtid.parse(self.replica.gtid_io_pos) if self.replica else {}
                self.gtid = gtid.render(gtid.merge(applied, received))
                self.relay_pending = not gtid.covers(applied, received)
                if self.mysqld.policy.failures and now - self.mysqld.policy.failures[-1] > 60:
                    self.mysqld.policy.reset()
            except MySQLError as exc:
                alive = False
                log.debug("mysqld does not answer: %s", exc)
        dcs_ok, check, positions = False, None, {}
        try:
            if self.session is not None:
                if self.consul.renew_session(self.session):
                    self.session_renewed_at = now
                else:
                    log.warning("our Consul session %s is gone (expired or invalidated)",
                                self.session)
                    self.session = None
                    self.published = None  # the position key went with the session
            keys = self.consul.cluster_state()
            self.leader, positions = keys.leader, keys.positions
            self.switchover, self.handover = keys.switchover, keys.handover
            self.async_primary = keys.async_primary
            check = self.consul.check_status(self.s.service_id)
            dcs_ok = True
            self.dcs_ok_at = now
        except DCSError as exc:
            log.debug("Consul: %s", exc)
        if dcs_ok:
            self._track_election(now)
        healthy = tuple(sorted(m.node for m in self.members if m.passing
                               and m.node != self.s.node_name))
        voters = tuple(n for n in healthy if n != self.last_leader)
        promote_in = 0.0
        if self.election_started is not None:
            grace = self.fence_after + self.s.loop_wait + 0.5
            promote_in = max(0.0, self.election_started + grace - now)
            holding = self.leader is not None and self.leader.node == self.s.node_name
            if promote_in > 0 and holding and read_only and self.last_leader_address:
                if not self.old_primary_fenced:
                    self.old_primary_fenced = old_primary_cannot_write(
                        self.last_leader_address, self.s.repl_user, self.s.repl_password)
                    if self.old_primary_fenced:
                        log.info("the old primary %s (%s) cannot accept writes (not listening "
                                 "or read-only): no need to wait out the fence grace",
                                 self.last_leader, self.last_leader_address)
                if self.old_primary_fenced:
                    promote_in = 0.0
        leader = self.leader
        # A handover counts for the election that follows it: the lock holder it names fenced
        # itself at the recorded position, so no fence grace is needed.
        handover_to = None
        if (self.handover and self.handover.get("from") == self.last_leader
                and (leader is None or leader.node == self.s.node_name)):
            handover_to = self.handover.get("to", "")
        switchover_to = None
        if self.switchover and leader and self.switchover.get("from") == leader.node:
            switchover_to = self.switchover.get("to", "")
        return Observation(
            node=self.s.node_name, stopping=stopping, observed_at=now,
            lock_valid_until=(self.session_renewed_at + self.fence_after) if self.session
            else 0.0,
            mysqld=self.mysqld.state, mysqld_restart_in=self.mysqld.restart_in(),
            mysqld_last_error=self.mysqld.last_error, mysql_alive=alive, read_only=read_only,
            dcs_ok=dcs_ok, dcs_unreachable_for=now - self.dcs_ok_at,
            registered=check is not None, check_passing=check == "passing",
            session=self.session,
            session_age=(now - self.session_renewed_at) if self.session else 0.0,
            session_ttl=self.s.session_ttl,
            leader=leader.node if leader else None,
            leader_address=leader.address if leader else None,
            gtid=self.gtid, relay_pending=self.relay_pending and alive,
            replica=self.replica if alive else None, errant=self.errant,
            drained=self.drained, published=self.published,
            positions=tuple(sorted((n, p) for n, p in positions.items()
                                   if n != self.s.node_name)),
            voters=voters, healthy_members=healthy,
            election_age=(now - self.election_started) if self.election_started else 0.0,
            election_timeout=self.election_timeout, promote_in=promote_in,
            fence_after=self.fence_after, switchover_to=switchover_to, handover_to=handover_to,
            async_primary=self.async_primary.get("node") if self.async_primary else None,
            handing_over=self.handing_over)

    def _track_election(self, now: float) -> None:
        """An election runs from the moment the leader key is seen free until a leader holds
        it again; we keep when it started and what we did for it."""
        if self.leader is None:
            if self.election_started is None:
                self.election_started = now
                self.drained = False
                if self.last_leader:
                    log.warning("the leader key is free (last held by %s): election",
                                self.last_leader)
        elif self.leader.node != self.s.node_name:
            # Another node leads: the election (if any) is over for us; the next one starts
            # afresh (drain again, wait the fence grace again).
            self.last_leader = self.leader.node
            self.last_leader_address = self.leader.address
            self.old_primary_fenced = False
            self.election_started = None
            self.drained = False
            self.handing_over = False

    # --- act ------------------------------------------------------------------------------------

    def act(self, d: Decision, o: Observation) -> None:
        a = d.action
        if a == Action.RESTART_MYSQLD:
            self.mysqld.start()
        elif a == Action.REGISTER:
            self.register(d.role)
        elif a == Action.CREATE_SESSION:
            self.session = self.consul.create_session(
                name=f"{self.s.service_name}-{self.s.node_name}", ttl=self.s.session_ttl,
                service_id=self.s.service_id)
            self.session_renewed_at = self.clock.monotonic()
            log.info("created Consul session %s (TTL %.0fs)", self.session, self.s.session_ttl)
            self._wake()
        elif a == Action.DRAIN:
            target = self.handover.get("gtid") if o.handover_to is not None and self.handover \
                else None
            self.drained = True  # even if the drain fails below: never hold up the election
            ok = self.mysql.stop_io_and_drain(DRAIN_TIMEOUT, received=target)
            log.info("replication IO stopped; relay log %s", "applied" if ok else
                     f"NOT fully applied within {DRAIN_TIMEOUT:.0f}s (SQL thread stopped or "
                     "slow): publishing the position actually applied")
            self._wake()
        elif a == Action.PUBLISH_POSITION:
            assert self.session is not None
            self.consul.publish_position(self.session, self.s.node_name, o.gtid)
            self.published = o.gtid
            self._wake()
        elif a == Action.ACQUIRE_LOCK:
            assert self.session is not None
            if self.consul.acquire_leader(self.session, self.s.node_name, self.address, o.gtid):
                log.info("acquired the leader lock at position %s", o.gtid or "(empty)")
                self._wake()
        elif a == Action.PROMOTE:
            self.mysql.promote()
            self._clear_position()
            self.election_started = None  # won: the next election starts afresh
            if self.handover is not None:
                self.consul.clear_handover()
            log.info("promoted: replication off, read_only OFF: this node is the primary")
        elif a == Action.FENCE:
            self.fence()
        elif a == Action.FOLLOW:
            assert o.leader_address is not None
            self.mysql.replicate_from(o.leader_address, self.s.repl_user, self.s.repl_password)
            self._clear_position()
            log.info("replication pointed at %s (%s) with GTID current_pos %s", o.leader,
                     o.leader_address, o.gtid or "(empty)")
        elif a == Action.STAY_REPLICA:
            self._clear_position()
        elif a == Action.MARK_ERRANT:
            self._mark_errant(o)
        elif a == Action.HAND_OVER:
            assert self.session is not None
            self.fence()
            position = self.mysql.vars().gtid_current_pos
            self.handing_over = True
            if self.async_primary and self.async_primary.get("node") == self.s.node_name:
                # The next primary fetches everything up to `position` before it opens.
                self.consul.clear_async()
            self.consul.hand_over(self.session, self.s.node_name, position,
                                  o.switchover_to or "")
            log.info("switchover: fenced at %s and released the leader lock", position)
        elif a == Action.REJECT_SWITCHOVER:
            self.consul.clear_switchover()
            log.error("%s", d.reason)
        if a in (Action.STAY_PRIMARY, Action.PROMOTE):
            self._semi_sync_for_replicas()
        if o.dcs_ok and o.registered and d.role != self.registered_role and a != Action.REGISTER:
            self.register(d.role)

    def register(self, role: Role) -> None:
        self.consul.register(
            service_id=self.s.service_id, address=self.address, port=3306,
            health_url=f"http://{self.address}:{self.s.health_port}/health", role=role,
            meta={"node": self.s.node_name, "server_id": str(self.server_id),
                  "version": self.version or "unknown", "autopilot": __version__})
        if self.registered_role != role:
            log.info("registered in Consul as %s with tag %s", self.s.service_id, role.value)
        self.registered_role = role

    def fence(self) -> None:
        killed = self.mysql.fence()
        log.warning("fenced: read_only is ON, %d client connection(s) dropped", killed)

    def release(self) -> None:
        """Give up the lock and our position (graceful stop): destroying the session deletes
        every key it holds."""
        if self.session is not None:
            self.consul.destroy_session(self.session)
            self.session = None

    def _wake(self) -> None:
        self.bus.publish(Event(Code.LEADER_CHANGED, "self"))  # run the next cycle at once

    def _clear_position(self) -> None:
        if self.published is not None:
            self.consul.clear_position(self.s.node_name)
            self.published = None

    def _semi_sync_for_replicas(self) -> None:
        """Semi-synchronous replication is on whenever another member passes its check (so it
        can acknowledge): a commit is acknowledged only once a replica has it. A failing or
        errant member is not counted, so a primary left alone does not make every writer wait.

        Whenever this primary may acknowledge a commit that no replica has (semi-sync off by
        our choice, or fallen back after SEMI_SYNC_TIMEOUT), it says so in Consul first (the
        `async` key; for MariaDB's own fall-back, as soon as it sees it): while the key names
        it, no other node takes over automatically (ha._election), as Patroni promotes only a
        synchronous standby. The key goes once a replica acknowledged a commit after
        semi-sync came back (replicas receive the binary log in order, so that replica has
        every earlier commit), or at once if nothing was committed meanwhile."""
        me = self.s.node_name
        others = sum(m.node != me and m.passing for m in self.members)
        enabled, status, yes_tx, pos = self.mysql.semi_sync_master()
        marked = bool(self.async_primary and self.async_primary.get("node") == me)
        if not others:
            if not marked:
                self._mark_async(pos, yes_tx, "no other healthy member: commits are "
                                 "acknowledged without a replica")
            if enabled:
                self.mysql.execute("SET GLOBAL rpl_semi_sync_master_enabled = OFF")
                log.warning("semi-synchronous replication OFF (no other healthy member): "
                            "until a replica acknowledges again, no other node may take over")
            return
        if not enabled:
            self.mysql.execute("SET GLOBAL rpl_semi_sync_master_enabled = ON")
            log.info("semi-synchronous replication ON (%d other healthy member(s))", others)
            enabled, status, yes_tx, pos = self.mysql.semi_sync_master()
        if not status:
            if not marked:
                self._mark_async(pos, yes_tx, "semi-sync fell back to asynchronous (no "
                                 f"acknowledgement within {self.s.semi_sync_timeout:g}s)")
            return
        if marked and self.async_primary is not None:
            if self.yes_tx_baseline is None:
                self.yes_tx_baseline = yes_tx  # we restarted meanwhile: wait for a new ack
            quiet = pos == self.async_primary.get("gtid", "")
            if quiet or yes_tx > self.yes_tx_baseline:
                self.consul.clear_async()
                self.async_primary = None
                log.info("a replica has every commit again (%s): automatic failover is "
                         "allowed again", "nothing was committed meanwhile" if quiet else
                         "it acknowledged a later commit")

    def _mark_async(self, pos: str, yes_tx: int, why: str) -> None:
        self.consul.mark_async(self.s.node_name, pos, why)
        self.async_primary = {"node": self.s.node_name, "gtid": pos, "why": why}
        self.yes_tx_baseline = yes_tx
        log.warning("marked this primary asynchronous in Consul (%s): if it is lost now, "
                    "commits only it has would be lost, so no replica takes over on its own",
                    why)

    def _mark_errant(self, o: Observation) -> None:
        base = gtid.parse(self.leader.gtid) if self.leader and self.leader.gtid else {}
        try:
            found = tuple(self.mysql.binlog_gtids_after(dict(base)))
        except MySQLError as exc:
            log.warning("could not list the errant GTIDs from our binary log: %s", exc)
            found = ()
        self.errant = found or tuple(gtid.ahead_of(gtid.parse(o.gtid), base)) or (o.gtid,)
        self.mysql.execute("STOP SLAVE")
        log.error("this node holds transactions the primary %s never had: %s. It stays "
                  "read-only, out of replication and unhealthy. Re-provision it: stop it, "
                  "empty its data directory and start it again (it then copies the primary)",
                  o.leader, ", ".join(self.errant))
