"""The local node's side of each HA cycle for the replication topology: observe (mysqld,
Consul, replication, election) into one Observation, and carry out the Decision that
`ha.decide` returns. The daemon owns the loop and the life cycle; this class owns the
cluster-facing state between cycles (session, lease, election bookkeeping, errant state), and
while primary its AckSetKeeper keeps the acknowledgement set (ackset.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from . import __version__, election, failsafe, gtid
from .ackset import AckSetKeeper
from .config import ClusterSettings, Settings, cluster_settings
from .dcs import Consul, MemberRecord
from .disk import DiskWatch
from .election import GRACE_MARGIN, SyncState
from .events import Code, Event, EventBus
from .exceptions import CatalogForgot, ConfigError, DataDirError, DCSError, MySQLError
from .keys import ClusterKeys, Heartbeat, LeaderInfo, paused_by
from .model import Action, Decision, Member, Observation, ProcState, Replication, Role
from .mysql import datadir as dd
from .mysql.server import FenceResult, LocalServer
from .peers import Peers
from .process import ManagedProcess
from .utils import Clock
from .watchdog import Opened

log = logging.getLogger(__name__)
# Seconds to apply the relay log before publishing the position actually applied (shorter
# than the SQL connection's read timeout, so a slow drain never fails the whole action).
DRAIN_TIMEOUT = 2.0
# A lock holder whose relay log makes no progress for this long gives the lock up.
APPLY_STALL = 15.0
HANDOVER_TIMEOUT = 10.0  # seconds a switchover may take before the old primary takes part again
# Seconds a replica that took part in the election waits for the new primary's acknowledgement
# set before following it without (the set comes at its promotion: following at once would
# mean one more IO restart, and the new primary's first commits wait for an acknowledgement).
ACK_SET_WAIT = 1.0
# A steady node (the last cycle stayed primary or replica, and no event woke this one) asks
# Consul only what this cycle needs: the primary its heartbeat (which proves its session
# holds the lock), a replica the cluster's keys (its proof that Consul answers, for the
# failsafe). The rest is read this often, and at once after any change (the keys' watch
# wakes the loop), a failure, or when not steady.
FULL_READ_EVERY = 5.0  # the primary's read of every key (the watch's safety net)
# Our own check's status: a change of it changes the service's health, which the members'
# watch announces (a full cycle reads it then); this is the safety net.
CHECK_EVERY = 10.0
# A settled primary (its acknowledgement set has nothing to prove, write or time) looks at
# everything this often; in between, each LOOP_WAIT, it only renews its lease (beat).
OBSERVE_EVERY = 2.0


class LocalNode:
    def __init__(self, settings: Settings, *, consul: Consul, mysql: LocalServer,
                 mysqld: ManagedProcess, bus: EventBus, clock: Clock, address: str,
                 server_id: int, data_id: str, peers: Peers,
                 hard_restart: Callable[[str], None], promise: failsafe.Promise,
                 cluster_settings: ClusterSettings | None = None) -> None:
        self.s = settings
        self.consul = consul
        self.mysql = mysql
        self.mysqld = mysqld
        self.bus = bus
        self.clock = clock
        self.address = address
        self.server_id = server_id
        self.data_id = data_id
        self.hard_restart = hard_restart
        self.keeper = AckSetKeeper(node=settings.node_name, consul=consul, mysql=mysql,
                                   peers=peers, clock=clock, repl_user=settings.repl_user,
                                   semi_sync_timeout=settings.semi_sync_timeout,
                                   status_max_age=3.0)
        self.apply_settings(cluster_settings or settings.cluster)
        self.version = ""
        self.gtid = ""
        self.applied = ""
        self.replica: Replication | None = None
        self.semi_sync_replica = False
        self.session: str | None = None
        self.release_wanted = ""  # why the session must go at the next cycle ("" = no)
        self.lease_from = 0.0  # send time of our last heartbeat that proved the lock
        self.hb_n = 0
        self.hb_seen: dict[tuple[str, int], float] = {}  # heartbeat -> when we first saw it
        self.opened = Opened()  # each time we lift read_only, and on which mysqld (watchdog)
        self.dcs_ok_at = clock.monotonic()
        self.registered_role: Role | None = None
        self.member = MemberRecord(self.consul, settings.node_name)
        self.members: tuple[Member, ...] = ()
        self.cluster = ClusterKeys()
        self.leader: LeaderInfo | None = None
        self.last_leader: str | None = None  # the last other node seen holding the lock
        self.leader_since: tuple[str, float] | None = None  # (that node, when first seen)
        self.last_problems: tuple[str, ...] = ()
        self.election_started: float | None = None
        # The old primary's last heartbeat, frozen when the lock was seen free (none can
        # follow: each checks the lock); the grace is timed from it (election.I6).
        self.final_hb: Heartbeat | None = None
        self.final_hb_at = 0.0  # when we first saw final_hb (our clock): the grace counts from it
        self.drained = False
        self.published: str | None = None
        self.relay_kept = False  # see Observation.relay_kept
        self.relay_checked_pid: int | None = None
        self.published_term = 0
        self.published_primary = False
        # Transactions the primary never had, found when it refused our position: kept in the
        # data directory's state file, so that a restart does not forget them (nemesis seed
        # 326437764: a restarted errant node published a position, joined the winner's
        # acknowledgement set, re-provisioned, and blocked every election after). A new data
        # directory (datadir.mark_done) starts without.
        self.errant: tuple[str, ...] = self._recorded_errant()
        self.behind = ""
        self.relay_pending = False
        self.apply_seen: tuple[str, float] | None = None  # (applied, since) while holding
        self.handed_over_at: float | None = None
        self.takeover_tried = 0  # the handover record (its Consul index) we tried to take over
        self.peers = peers
        self.silent_since: float | None = None  # when we began asking a silent leader
        self.promise = promise  # failsafe: what we promised a primary cut off with us
        self.failsafe_note = ""
        self.refused_config: dict[str, str] | None = None
        self.refused_since: float | None = None  # when the primary first refused our position
        # Set when mysqld's recovery truncated our binary log: a new server_id is needed
        # before replicating (the daemon renews it).
        self.identity_pending = ""
        self.disk = DiskWatch(Path(settings.datadir), settings.disk_min_free, self.clock)
        self.steady = False  # the last cycle decided STAY_PRIMARY or STAY_REPLICA
        self.full_read_at = 0.0  # when every key was last read
        self.renew_at = 0.0  # when our session is next renewed (SESSION_TTL / 3 apart)
        self.check_at = 0.0  # when our check's status is next read
        self.check: str | None = None  # its last status
        self.looked_at = 0.0  # when the last full observation began

    # --- observe --------------------------------------------------------------------------------

    def observe(self, stopping: bool, woken: bool = True) -> Observation:
        """One cycle's look. `woken`: an event (a change of the keys or the members, a child's
        exit, a request) woke this cycle; else it is a timed one, and a steady node reads
        only what can have changed unannounced (see FULL_READ_EVERY)."""
        now = self.clock.monotonic()
        self.looked_at = now
        steady = self.steady and not woken and not stopping
        # A steady primary, holding the lock over this mysqld with replication off: the
        # keys change only by its own heartbeat (the watch announces anything else).
        quiet_primary = steady and self._holding(self.cluster) and self.replica is None \
            and self.mysqld.pid == self.relay_checked_pid \
            and now - self.full_read_at < FULL_READ_EVERY
        alive, read_only = False, None
        if self.mysqld.state == ProcState.RUNNING:
            try:
                v = self.mysql.vars()
                alive, read_only, self.version = True, v.read_only, v.version
                self.semi_sync_replica = v.semi_sync_replica
                if not quiet_primary:
                    self.replica = self.mysql.replica_status()
                if self.mysqld.pid != self.relay_checked_pid:  # the first look at this mysqld
                    self.relay_checked_pid = self.mysqld.pid
                    r = self.replica
                    self.relay_kept = r is not None and not (r.io_running or r.sql_running
                                                             or r.io_connecting)
                # A semi-sync replica acknowledges what it has *received*: an acknowledged
                # commit may sit in its relay log, unapplied. Its claim in an election is
                # therefore applied + received, and it opens only once all is applied.
                applied = gtid.parse(v.position)
                received = gtid.parse(self.replica.gtid_io_pos) if self.replica else {}
                self.applied = v.position
                self.gtid = gtid.render(gtid.merge(applied, received))
                self.relay_pending = not gtid.covers(applied, received)
                if self.mysqld.policy.failures and now - self.mysqld.policy.failures[-1] > 60:
                    self.mysqld.policy.reset()
            except MySQLError as exc:
                alive = False
                log.debug("mysqld does not answer: %s", exc)
        dcs_ok, check, keys = False, None, self.cluster
        try:
            if self.release_wanted and self.session is not None:
                log.warning("giving up the leader lock and our election position: %s",
                            self.release_wanted)
                if self._holding(self.cluster) and self.mysqld.pid is None:
                    # The mysqld that was writable has exited (its next start is read-only):
                    # a handover without a position, so that the next primary need not wait
                    # out our lease (election.I6).
                    try:
                        self.consul.hand_over(self.session, self.s.node_name, "", "")
                    except DCSError as exc:
                        log.info("no handover recorded (%s): the next primary waits out our "
                                 "lease", exc)
                self.consul.destroy_session(self.session)
                self._session_gone()
            self.release_wanted = ""
            if self.session is not None and (not steady or now >= self.renew_at):
                # Consul ends a session between TTL and twice the TTL after its last
                # renewal; a third of the TTL leaves two more tries (the lease is the
                # heartbeat's, not the session's)
                self.renew_at = now + self.cfg.session_ttl / 3
                if not self.consul.renew_session(self.session):
                    log.warning("our Consul session %s is gone (expired or invalidated)",
                                self.session)
                    self._session_gone()
            if not quiet_primary:
                # Elections decide on a linearizable read (a stale acknowledgement set
                # could name members that are no longer the ones that matter).
                keys = self.consul.cluster_state(consistent=self.leader is None)
                self.full_read_at = now
                self.cluster = keys
                self._adopt_settings(keys)
                if keys.problems != self.last_problems:
                    for p in keys.problems:
                        log.warning("%s", p)
                    self.last_problems = keys.problems
                self.leader = keys.leader
            if self._holding(keys):
                assert self.session is not None
                sent = self.clock.monotonic()
                self.hb_n += 1
                if self.consul.heartbeat(self.session, self.s.node_name, self.hb_n, self.lease):
                    self.lease_from = sent
                else:  # the lock is not ours any more, or the session is gone: look again
                    self.steady, self.renew_at = False, 0.0
            if not steady or now >= self.check_at or self.check != "passing":
                self.check = self.consul.check_status(self.s.service_id)
                self.check_at = now + CHECK_EVERY
            check = self.check
            dcs_ok = True
            self.dcs_ok_at = now
        except DCSError as exc:
            log.debug("Consul: %s", exc)
            self.renew_at = self.check_at = 0.0
            self._failsafe_round(keys)
        if dcs_ok:
            self._track(now, keys)
            self.failsafe_note = ""
        holding = self._holding(keys)
        silent_for, says = self._leader_silence(now, keys, holding)
        disk_full = self.disk.full()
        # The others that may be elected: passing, and not tagged NOFAILOVER
        healthy = tuple(sorted(m.node for m in self.members if m.passing and not m.nofailover
                               and m.node != self.s.node_name))
        leader = keys.leader
        lock_valid_until = self.lease_from + self.lease if self.session and self.lease_from \
            else 0.0
        handover = keys.handover if (keys.handover and keys.handover.from_node in (
            self.last_leader, self.s.node_name) and (leader is None or holding)) else None
        # Only a refusal by the node that holds the lock counts (the IO thread's error stays
        # after it stopped: it may be an old primary's, whose restart truncated what we hold).
        refused = self._refused() if alive and leader is not None and self.replica is not None \
            and self.replica.master_host == leader.address else ""
        return Observation(
            node=self.s.node_name, stopping=stopping, observed_at=now,
            lock_valid_until=lock_valid_until, lease_left=lock_valid_until - now,
            mysqld=self.mysqld.state, mysqld_restart_in=self.mysqld.restart_in(),
            mysqld_last_error=self.mysqld.last_error, mysql_alive=alive, read_only=read_only,
            dcs_ok=dcs_ok, dcs_unreachable_for=now - self.dcs_ok_at,
            registered=check is not None, check_passing=check == "passing",
            session=self.session, leader=leader.node if leader else None,
            leader_address=leader.address if leader else None,
            leader_unreadable=keys.leader_unreadable, leader_silent_for=silent_for,
            leader_says=says, leader_lease=keys.heartbeat.lease if keys.heartbeat else 0.0,
            gtid=self.gtid, data_id=self.data_id, relay_pending=self.relay_pending and alive,
            apply_stalled=self._apply_stalled(now, holding, alive),
            replica=self.replica if alive else None,
            semi_sync_replica=self.semi_sync_replica and alive,
            in_ack_set=self._in_ack_set(keys), ack_set_pending=self._ack_set_pending(now, keys),
            identity_pending=self.identity_pending,
            errant=self.errant, behind=self.behind,
            refused=refused, refusal_confirmed=self._refusal_confirmed(refused, now, dcs_ok,
                                                                        leader),
            drained=self.drained, relay_kept=self.relay_kept and alive and self._member(keys),
            published=self.published, published_term=self.published_term,
            published_primary=self.published_primary,
            positions=tuple(sorted((p for n, p in keys.positions.items()
                                    if n != self.s.node_name), key=lambda p: p.node)),
            sync=keys.sync, voters=election.awaited_voters(healthy, self.last_leader, keys.sync),
            healthy_members=healthy,
            election_age=(now - self.election_started) if self.election_started else 0.0,
            voter_timeout=self.voter_timeout,
            forced=keys.forced.get("candidate") if keys.forced else None,
            paused=paused_by(keys.pause), nofailover=self.s.nofailover,
            required=self.s.node_name in {n for n, _ in election.required(keys.sync)},
            promised_for=max(0.0, self.promise.left()[0]), promised_to=self.promise.left()[1],
            promote_in=self._promote_in(now, keys, holding, read_only, handover),
            switchover_to=self._switchover_to(keys),
            handover=handover, takeover_tried=bool(handover and handover.index
                                                    and handover.index == self.takeover_tried),
            handing_over=self.handed_over_at is not None,
            handover_age=(now - self.handed_over_at) if self.handed_over_at else 0.0,
            handover_timeout=HANDOVER_TIMEOUT, lease=self.lease, disk_full=disk_full,
            roomy_members=self._roomy(healthy) if holding else ())

    def beat(self) -> bool:
        """Between full looks, a settled primary only proves it holds the lock and renews
        its lease (election.I1): one Consul transaction. True when that was all this cycle
        needed; False when a full cycle is due (not settled, OBSERVE_EVERY passed, or the
        heartbeat failed). Anything that changes meanwhile wakes the loop by itself: the
        keys' and the members' watches, mysqld's exit."""
        now = self.clock.monotonic()
        if not (self.steady and self.keeper.settled and self.session is not None
                and self._holding(self.cluster) and self.mysqld.state == ProcState.RUNNING
                and self.mysqld.pid == self.relay_checked_pid
                and now - self.looked_at < OBSERVE_EVERY):
            return False
        self.hb_n += 1
        try:
            ok = self.consul.heartbeat(self.session, self.s.node_name, self.hb_n, self.lease)
        except DCSError as exc:
            log.debug("Consul: %s", exc)
            ok = False
        if not ok:
            self.steady = False  # the full cycle sees why (and runs the failsafe round)
            return False
        self.lease_from = self.dcs_ok_at = now
        return True

    def apply_settings(self, cfg: ClusterSettings) -> None:
        """The cluster-wide settings (config.ClusterSettings), from Consul when it has them."""
        self.cfg = cfg
        # The lease (election.I1): a primary fences when no heartbeat proved its lock for this
        # long. Every heartbeat carries it, so others time the grace with the writer's value.
        self.lease = cfg.lease
        self.voter_timeout = DRAIN_TIMEOUT + 2 * cfg.loop_wait + 2.0
        self.keeper.semi_sync_timeout = cfg.semi_sync_timeout

    def _adopt_settings(self, keys: ClusterKeys) -> None:
        if keys.config is None or keys.config == self.cfg.doc():
            return
        try:
            new = cluster_settings(keys.config)
        except ConfigError as exc:
            if keys.config != self.refused_config:
                log.error("the cluster settings in Consul (%s) are refused, this node keeps "
                          "%s: %s", self.consul.keys.config, self.cfg.doc(), exc)
                self.refused_config = keys.config
            return
        changes = ", ".join(f"{k} {self.cfg.doc()[k]} -> {v}" for k, v in new.doc().items()
                            if self.cfg.doc()[k] != v)
        log.warning("cluster settings changed in Consul: %s", changes)
        self.apply_settings(new)

    def _failsafe_round(self, keys: ClusterKeys) -> None:
        """Consul is unreachable: while we hold the lock and our lease still runs, every member
        of the last known membership must confirm (failsafe.py) for the lease to run on."""
        if not self.cfg.failsafe or not self._holding(keys) or self.session is None:
            return
        started = self.clock.monotonic()
        if started >= self.lease_from + self.lease:
            return  # run out: we fenced; no reopening before Consul answers
        members = set(keys.sync.names if keys.sync else ()) | {
            m.node for m in self.members if m.passing}
        ok, note = failsafe.lease_round(self.s.repl_password, me=self.s.node_name,
                                        lease=self.lease, members=members,
                                        addresses=self._addresses(), port=self.s.health_port)
        if ok:
            self.lease_from = started
        if note != self.failsafe_note:
            (log.info if ok else log.warning)("Consul is unreachable; %s", note)
            self.failsafe_note = note

    def _roomy(self, healthy: tuple[str, ...]) -> tuple[str, ...]:
        """Healthy members whose own status says their volume has room."""
        out = []
        for n in healthy:
            doc = self.peers.status(n, max_age=3.0)
            if doc is not None and not doc.get("disk_full"):
                out.append(n)
        return tuple(out)

    def _holding(self, keys: ClusterKeys) -> bool:
        return bool(self.session and keys.leader and keys.leader.node == self.s.node_name
                    and keys.leader.session == self.session)

    def _session_gone(self) -> None:
        self.session = None
        self.published = None  # the position key went with the session
        self.lease_from = 0.0

    def _track(self, now: float, keys: ClusterKeys) -> None:
        """An election runs from the moment the leader key is seen free until a leader holds
        it again; we keep when it started and what we did for it. Heartbeats are timed by
        when we first saw each one (election.grace_ends)."""
        hb = keys.heartbeat
        if hb is not None and (hb.node, hb.n) not in self.hb_seen:
            self.hb_seen[(hb.node, hb.n)] = now
            if len(self.hb_seen) > 16:
                for k in sorted(self.hb_seen, key=self.hb_seen.__getitem__)[:-8]:
                    del self.hb_seen[k]
        if self.leader is None:
            self.leader_since = None  # whoever takes the lock next starts a new term
            if self.election_started is None:
                self.election_started = now
                self.final_hb = keys.heartbeat
                # Kept apart from hb_seen, which keeps only recent heartbeats: ours, once we
                # hold the lock, would push it out and restart the grace for ever.
                self.final_hb_at = self.hb_seen.get((hb.node, hb.n), now) if hb else now
                self.drained = False
                if self.last_leader:
                    log.warning("the leader key is free (last held by %s): election",
                                self.last_leader)
        elif self.leader.node != self.s.node_name:
            # Another node leads: the election (if any) is over for us; the next one starts
            # afresh (drain again, wait the grace again).
            if self.leader_since is None or self.leader_since[0] != self.leader.node:
                self.leader_since = (self.leader.node, now)
            self.last_leader = self.leader.node
            self.election_started = None
            self.drained = False
            self.handed_over_at = None

    def _leader_silence(self, now: float, keys: ClusterKeys, holding: bool
                        ) -> tuple[float, str]:
        """How long the leader's heartbeat has not changed (by our clock), and, once that is
        longer than its lease, what its own endpoint says (behaviour 4 of the safety issue:
        a primary that lost Consul only)."""
        leader, hb = keys.leader, keys.heartbeat
        if holding or leader is None or hb is None or hb.node != leader.node:
            self.silent_since = None
            if not holding:
                self.peers.want({})
            return 0.0, ""
        silent = now - self.hb_seen.get((hb.node, hb.n), now)
        if silent <= hb.lease:
            self.silent_since = None
            self.peers.want({})
            return silent, ""
        if self.silent_since is None:
            self.silent_since = now
            self.peers.want({leader.node: leader.address})
            self.peers.poke()
        doc = self.peers.status(leader.node, max_age=1.5)
        if doc is None:
            return silent, "unreachable" if now - self.silent_since > 1.5 else ""
        return silent, "writable" if doc.get("writable") else "fenced"

    def _promote_in(self, now: float, keys: ClusterKeys, holding: bool, read_only: bool | None,
                    handover: election.Handover | None) -> float:
        """election.I6: seconds until the old primary's lease surely ran out."""
        if not holding or read_only is not True or self.election_started is None:
            return 0.0
        if handover is not None:
            return 0.0  # it fenced itself before it released the lock
        hb = self.final_hb
        if hb is not None:
            end = election.grace_ends(self.final_hb_at, max(hb.lease, self.lease), GRACE_MARGIN)
        elif keys.sync is not None:
            # A set but no heartbeat (written by an older version, or deleted): time the
            # grace from when we saw the key free, which is after the lock went.
            end = election.grace_ends(self.election_started, self.lease, GRACE_MARGIN)
        else:
            return 0.0  # a new cluster: there was never another primary
        return max(0.0, end - now)

    def _member(self, keys: ClusterKeys) -> bool:
        """This node, on its data, is in the recorded acknowledgement set, whoever wrote it."""
        data = keys.sync.data_of(self.s.node_name) if keys.sync else None
        return data is not None and (not data or data == self.data_id)

    def _in_ack_set(self, keys: ClusterKeys) -> bool:
        """election.I2: acknowledge only when the current primary counts us in its set."""
        sync, leader = keys.sync, keys.leader
        if sync is None or leader is None or sync.primary != leader.node:
            return False
        data = sync.data_of(self.s.node_name)
        return data is not None and (not data or data == self.data_id)

    def _ack_set_pending(self, now: float, keys: ClusterKeys) -> float:
        """Seconds still to wait for a new primary's acknowledgement set (ACK_SET_WAIT): only
        while it has not written one and we published a position for the election it won
        (its set will name us)."""
        sync, leader = keys.sync, keys.leader
        if leader is None or leader.node == self.s.node_name or self.leader_since is None \
                or self.leader_since[0] != leader.node or self.s.node_name not in keys.positions \
                or (sync is not None and sync.primary == leader.node):
            return 0.0
        return max(0.0, ACK_SET_WAIT - (now - self.leader_since[1]))

    def _refusal_confirmed(self, refused: str, now: float, dcs_ok: bool,
                           leader: LeaderInfo | None) -> bool:
        """The node that refuses our position is the primary *now*: a heartbeat of its (one
        that checks its session holds the lock) was first seen after the refusal. A primary
        gives up the lock before its mysqld restarts, so a refusal by a primary's mysqld that
        restarted (and whose recovery truncated what we hold) is never confirmed: we are not
        errant, it is behind, and the election sorts it out."""
        if not refused:
            self.refused_since = None
            return False
        if self.refused_since is None:
            self.refused_since = now
        since = self.refused_since
        return dcs_ok and leader is not None and any(
            node == leader.node and seen > since for (node, _), seen in self.hb_seen.items())

    def _refused(self) -> str:
        """The primary refuses our position (IO error 1236): errant, or behind its purged
        binary logs (a different problem: nothing of ours is lost, we need newer data)."""
        r = self.replica
        if r is None or r.last_io_errno != 1236:
            return ""
        text = r.last_io_error
        if "purged" in text or "Could not find GTID state" in text:
            return "behind"
        return "errant"

    def _apply_stalled(self, now: float, holding: bool, alive: bool) -> str:
        """Holding the lock with a relay log to apply: why it cannot be applied ("" = it
        progresses). A lock holder that cannot open must not keep the lock for ever."""
        r = self.replica
        if not (holding and alive and self.relay_pending and r is not None):
            self.apply_seen = None
            return ""
        if not r.sql_running and r.last_sql_errno:
            return f"the SQL thread stopped on error {r.last_sql_errno}: {r.last_sql_error}"
        if self.apply_seen is None or self.apply_seen[0] != self.applied:
            self.apply_seen = (self.applied, now)
            return ""
        if now - self.apply_seen[1] >= APPLY_STALL:
            return (f"the relay log made no progress for {now - self.apply_seen[1]:.0f}s "
                    f"(applied {self.applied or 'nothing'}, received {self.gtid})")
        return ""

    def _switchover_to(self, keys: ClusterKeys) -> str | None:
        if not self._holding(keys):
            return None
        return self.consul.switchover_for(keys.switchover, self.s.node_name, self.session)

    # --- act ------------------------------------------------------------------------------------

    def act(self, d: Decision, o: Observation) -> None:
        a = d.action
        self.steady = a in (Action.STAY_PRIMARY, Action.STAY_REPLICA) and o.dcs_ok
        if a == Action.RESTART_MYSQLD:
            self.mysqld.start()
        elif a == Action.REGISTER:
            self.register(d.role)
        elif a == Action.CREATE_SESSION:
            self._create_session()
            self._wake()
        elif a == Action.DRAIN:
            target = o.handover.gtid if o.handover is not None else None
            self.drained = True  # even if the drain fails below: never hold up the election
            ok = self.mysql.stop_io_and_drain(DRAIN_TIMEOUT, received=target)
            log.info("replication IO stopped; relay log %s", "applied" if ok else
                     f"NOT fully applied within {DRAIN_TIMEOUT:.0f}s (SQL thread stopped or "
                     "slow): publishing the position received")
            self._wake()
        elif a == Action.RECOVER_RELAY:
            self._recover_relay()
        elif a == Action.PUBLISH_POSITION:
            assert self.session is not None
            was_primary = self._was_primary()
            self.consul.publish_position(self.session, self.s.node_name, o.gtid, self.data_id,
                                         term=election.term(o.sync),
                                         can_apply=not o.apply_stalled and not o.disk_full
                                         and not o.nofailover, primary=was_primary)
            self.published, self.published_term = o.gtid, election.term(o.sync)
            self.published_primary = was_primary
            self._wake()
        elif a == Action.ACQUIRE_LOCK:
            assert self.session is not None
            sync_index = o.sync.index if o.sync else 0
            if self.consul.acquire_leader(self.session, self.s.node_name, self.address, o.gtid,
                                          sync_index):
                log.info("acquired the leader lock at position %s", o.gtid or "(empty)")
                if o.forced:
                    self._record_forced(o)
                    self.clear_errant("an operator forced this node to take over: its data, "
                                      "errant transactions included, is the cluster's now")
                self._wake()
            else:
                log.info("the leader lock was not acquired (taken meanwhile, or the "
                         "acknowledgement set changed): deciding again")
        elif a == Action.TAKE_OVER:
            self._take_over(o)
        elif a == Action.PROMOTE:
            self._promote(o, reason=d.reason)
        elif a == Action.FENCE:
            self.fence()
        elif a == Action.FOLLOW:
            assert o.leader_address is not None
            self._record_role("replica")  # before anything replicated is binlogged (I8)
            self.mysql.replicate_from(o.leader_address, self.s.repl_user, self.s.repl_password,
                                      semi_sync=o.in_ack_set)
            self.relay_kept = False  # a member applied it first (I9); a non-member's held no ack
            self._clear_position()
            log.info("replication pointed at %s (%s) from GTID position %s, semi-sync "
                     "acknowledgements %s", o.leader, o.leader_address, o.gtid or "(empty)",
                     "on (in its acknowledgement set)" if o.in_ack_set else "off")
        elif a == Action.STAY_REPLICA:
            self._clear_position()
        elif a == Action.MARK_ERRANT:
            self._mark_errant(o)
        elif a == Action.MARK_BEHIND:
            self.mysql.execute("STOP SLAVE")
            self.behind = (f"the primary {o.leader} no longer has the binary logs that follow "
                           f"this node's position {o.gtid or '(empty)'} (purged)")
            log.error("%s: this node needs newer data (a snapshot newer than its position, or "
                      "a copy of a replica); nothing of its own is lost", self.behind)
        elif a == Action.HAND_OVER:
            assert self.session is not None
            # Named before we fence: the target then takes the lock on our handover alone
            # (election.I10), without an election.
            to = o.switchover_to or election.handover_target(
                o.sync, o.roomy_members if o.disk_full else o.healthy_members,
                self._lags(o.roomy_members if o.disk_full else o.healthy_members))
            if not self.fence(drop=False):
                return
            position = self.mysql.vars().position
            self.consul.hand_over(self.session, self.s.node_name, position, to,
                                  term=election.term(o.sync))
            self.handed_over_at = self.clock.monotonic()
            # After the handover (read_only alone stops every write): the target is not
            # kept waiting while our clients go.
            killed = self.mysql.drop_clients()
            log.info("switchover: fenced at %s, released the leader lock to %s, %d client "
                     "connection(s) dropped", position, to or "the election", killed)
        elif a == Action.DEPOSE:
            leader = self.cluster.leader
            if leader is not None and leader.session:
                log.warning("%s", d.reason)
                self.consul.destroy_session_of(leader.session)
                try:
                    self.consul.record_history("deposed", {"primary": leader.node,
                                                           "by": self.s.node_name,
                                                           "reason": d.reason})
                except DCSError:
                    pass
                self._wake()
        elif a == Action.ABORT_HANDOVER:
            log.warning("%s", d.reason)
            self.handed_over_at = None
            self.consul.clear_handover()
        elif a == Action.RELEASE:
            assert self.session is not None
            self.consul.publish_position(self.session, self.s.node_name, o.gtid, self.data_id,
                                         term=election.term(o.sync), can_apply=False)
            self.published, self.published_term = o.gtid, election.term(o.sync)
            self.published_primary = False
            self.consul.release_leader(self.session)
            log.error("%s", d.reason)
        elif a == Action.REJECT_SWITCHOVER:
            self.consul.clear_switchover()
            log.error("%s", d.reason)
        elif a == Action.STAY_PRIMARY and o.dcs_ok and self.session:
            self.keeper.tend(self.session, o.sync, self.members, self._addresses())
        if o.dcs_ok and o.registered and d.role != self.registered_role and a != Action.REGISTER:
            self.register(d.role)
        elif o.dcs_ok and self.member.gone(self.s.node_name in self.cluster.members):
            self.register(self.registered_role or d.role)

    def _take_over(self, o: Observation) -> None:
        """election.I10: the switchover's target applies up to the handed-over position, takes
        the lock on the handover alone and opens, all in this one action (no election: the
        old primary fenced before it released the lock). When it cannot, it says why and
        takes part in an election instead."""
        h = o.handover
        assert h is not None
        self.takeover_tried = h.index
        self.drained = True
        session = self.session if self.session is not None else self._create_session()
        applied = self.mysql.stop_io_and_drain(DRAIN_TIMEOUT, received=h.gtid)
        held = self.mysql.vars().position
        if not applied or not gtid.covers(gtid.parse(held), gtid.parse(h.gtid)):
            log.warning("switchover: this node did not apply everything up to %s, where %s "
                        "handed over, within %.0fs (it holds %s): taking part in an election "
                        "instead", h.gtid, h.from_node, DRAIN_TIMEOUT, held or "(empty)")
            self._wake()
            return
        followers, left_out = election.handover_followers(self.s.node_name, held, o.sync, h,
                                                          o.positions)
        new = self.keeper.term_set(self.data_id, o.sync, followers)
        sent = self.clock.monotonic()
        taken = self.consul.take_over(session, self.s.node_name, self.address, held, new,
                                      h.index)
        if taken is None:
            log.info("switchover: the handed-over lock was not taken (the handover or the "
                     "acknowledgement set changed meanwhile): taking part in an election")
            self._wake()
            return
        self.lease_from = sent  # the transaction proved the lock as of when it was sent
        log.info("took the leader lock %s handed over at %s", h.from_node, h.gtid)
        self._promote(replace(o, gtid=held, lock_valid_until=sent + self.lease, handover=None,
                              session=session), (taken, left_out),
                      reason=f"switchover: {h.from_node} handed over at {h.gtid or '(empty)'}",
                      previous=h.from_node)

    def _create_session(self) -> str:
        """Our session, tied to this node's serfHealth and service check (dcs.Consul)."""
        try:
            session = self.session = self.consul.create_session(
                name=f"{self.s.service_name}-{self.s.node_name}", ttl=self.cfg.session_ttl,
                service_id=self.s.service_id)
        except CatalogForgot:
            self.member.forget()  # its keys may be gone with the catalog
            self.consul.resync(lambda: self.register(self.registered_role or Role.UNKNOWN),
                               self.clock.monotonic())
            raise
        log.info("created Consul session %s (TTL %.0fs)", session, self.cfg.session_ttl)
        return session

    def _lags(self, nodes: tuple[str, ...]) -> dict[str, float | None]:
        """Replication lag each node's own status last reported (None: unknown)."""
        out: dict[str, float | None] = {}
        for n in nodes:
            doc = self.peers.status(n, max_age=3.0)
            lag = doc.get("lag") if doc else None
            out[n] = float(lag) if isinstance(lag, (int, float)) else None
        return out

    def _promote(self, o: Observation,
                 written: tuple[SyncState, dict[str, str]] | None = None, *,
                 reason: str = "", previous: str | None = None) -> None:
        """election.I3 and I6: our term's acknowledgement set is written before we open (not
        synced: until a member holds what we hold, only we may take over); the nodes that
        took part in the election follow us and may acknowledge. `written`: a take-over
        wrote the set with the lock already (election.I10), with the nodes it left out."""
        assert self.session is not None
        if written is not None:
            new, left_out = written
            followers = dict(new.members)
        else:
            followers, left_out = election.term_followers(self.s.node_name, o.gtid,
                                                          o.positions)
            if o.sync is not None and o.sync.primary == self.s.node_name:
                docs = {n: self.peers.status(n, self.keeper.status_max_age) or {}
                        for n in o.sync.names}
                kept, kept_out = election.reopen_followers(
                    self.s.node_name, self.data_id, o.gtid, o.sync,
                    self.mysql.attached_replicas(),
                    {n: str(d["gtid_current_pos"]) for n, d in docs.items()
                     if "gtid_current_pos" in d},
                    {n: str(d["data_id"]) for n, d in docs.items() if d.get("data_id")})
                left_out = kept_out | left_out
                followers = {n: d for n, d in kept.items() if n not in left_out} | followers
        for node, why in sorted(left_out.items()):
            log.warning("%s is left out of our acknowledgement set: %s (it will be refused as "
                        "errant, and re-provisioned)", node, why)
        if written is not None:
            self.keeper.began(written[0])
        elif self.keeper.start_term(self.session, self.data_id, o.sync, followers) is None:
            log.warning("could not write our acknowledgement set (the lock or the set changed "
                        "meanwhile): not opening yet")
            return
        self.mysql.prepare_primary(semi_sync=bool(followers))
        if followers:
            self.keeper.note_sync_target()
        if self.clock.monotonic() >= o.lock_valid_until - 0.1:
            log.warning("our lease ran out while promoting: not opening for writes")
            return
        self._record_role("primary")  # durably, before anything is written (election.I8)
        if o.handover is not None:
            # Before we open: a handover left behind would let a later election skip the
            # lease wait while we may still be writable.
            self.consul.clear_handover()
        self.mysql.set_read_only(False)
        # After lifting it: the watchdog checks again if need be (the pid read afterwards: a
        # mysqld restarted in between starts read-only, and is merely looked at).
        self.opened = Opened(self.opened.gen + 1, self.mysqld.pid)
        try:
            self.mysql.forget_replication()
        except MySQLError as exc:  # only settings left behind: the next promotion retries
            log.warning("could not remove the replication settings after opening: %s", exc)
        self._clear_position()
        self.election_started = None  # won: the next election starts afresh
        if o.forced:
            self.consul.clear_forced()
        log.info("promoted: replication off, read_only OFF: this node is the primary "
                 "(acknowledgement set: %s)", ", ".join(followers) or "none yet")
        if previous is None:
            previous = o.sync.primary if o.sync and o.sync.primary != self.s.node_name else ""
        self.consul.record_promotion_soon("promoted", {
            "node": self.s.node_name, "previous": previous, "position": o.gtid,
            "how": "forced" if o.forced else "switchover" if written is not None else
            "election" if o.sync is not None else "first primary", "reason": reason})
        self._wake()  # the next cycle publishes us as writable: routers find us at once

    def _record_forced(self, o: Observation) -> None:
        required = [n for n, _ in election.required(o.sync)]
        have = {p.node for p in o.positions} | {self.s.node_name}
        try:
            self.consul.record_history("forced-failover", {
                "candidate": self.s.node_name, "position": o.gtid,
                "missing": ", ".join(n for n in required if n not in have),
                "sync": str(o.sync.doc() if o.sync else None)})
        except DCSError as exc:
            log.warning("could not record the forced failover in the history: %s", exc)
        log.warning("FORCED failover by an operator: taking over at %s without the positions "
                    "of %s; commits only they hold are lost", o.gtid or "(empty)",
                    ", ".join(n for n in required if n not in have) or "nobody")

    def register(self, role: Role) -> None:
        self.consul.register(
            service_id=self.s.service_id, address=self.address, port=3306,
            health_url=f"http://{self.address}:{self.s.health_port}/health", role=role,
            meta={"node": self.s.node_name, "server_id": str(self.server_id),
                  "version": self.version or "unknown", "autopilot": __version__,
                  "data_id": self.data_id,
                  **{f"tag_{k}": v for k, v in self.s.tags.items()}})
        record = {"server_id": str(self.server_id), "data": self.data_id,
                  "address": self.address}
        self.member.write(record)
        if self.registered_role != role:
            log.info("registered in Consul as %s with tag %s", self.s.service_id, role.value)
        self.registered_role = role

    def fence(self, drop: bool = True) -> bool:
        """read_only on and (`drop`) clients dropped; when commits wait for acknowledgements
        that will not come, crash mysqld instead (its semi-sync recovery truncates them).
        True when fenced in place."""
        result, killed = self.mysql.fence(drop=drop)
        if result == FenceResult.WAITING:
            self.hard_restart("commits wait for acknowledgements that do not come")
            return False
        if drop:
            log.warning("fenced: read_only is ON, %d client connection(s) dropped", killed)
        else:
            log.warning("fenced: read_only is ON")
        return True

    def release(self) -> None:
        """Give up the lock and our position (graceful stop): destroying the session deletes
        every key it holds."""
        if self.session is not None:
            self.consul.destroy_session(self.session)
            self._session_gone()

    def _addresses(self) -> dict[str, str]:
        out = {n: r["address"] for n, r in self.cluster.members.items() if r.get("address")}
        out.update({m.node: m.address for m in self.members if m.address})
        out.pop(self.s.node_name, None)
        return out

    def _wake(self) -> None:
        self.bus.publish(Event(Code.LEADER_CHANGED, "self"))  # run the next cycle at once

    def _was_primary(self) -> bool:
        """Our last role was the primary's (the state file says so): an election prefers us
        among equals, so that a primary whose lock alone was lost keeps its role."""
        try:
            return dd.read_node_state(self.s.datadir).get("last_role") == "primary"
        except DataDirError:
            return False

    def _record_role(self, role: str) -> None:
        """What this node's binary log is about to receive: its own commits (primary) or a
        primary's (replica). Kept in the data directory's state file, so that after a crash,
        even of the whole host, the next start knows whether its recovery may truncate."""
        # Without it, a crash recovery treats this node as a replica (keeps everything):
        # errant at worst, never a lost commit.
        self._record("its role", last_role=role)

    def _record(self, what: str, **changes: object) -> bool:
        """Write `changes` to the data directory's state file (None: remove the key)."""
        try:
            state = dd.read_node_state(self.s.datadir)
            new = {k: v for k, v in {**state, **changes}.items() if v is not None}
            if new != state:
                dd.write_node_state(self.s.datadir, new)
            return True
        except (DataDirError, OSError) as exc:
            log.error("cannot record %s in this node's state file: %s", what, exc)
            return False

    def _recorded_errant(self) -> tuple[str, ...]:
        try:
            errant = dd.recorded_errant(self.s.datadir)
        except DataDirError:
            return ()  # the daemon reports an unreadable state file before we get here
        if errant:
            log.error("this node's state file records transactions a primary refused as "
                      "errant: %s. It stays out of replication and elections until it is "
                      "re-provisioned (automatic with snapshots, or: empty its data directory "
                      "and restart it), or an operator forces it to take over: "
                      "autopilot-mysql failover --candidate %s --force", ", ".join(errant),
                      self.s.node_name)
        return errant

    def clear_errant(self, why: str) -> None:
        if self.errant:
            log.warning("no longer errant: %s", why)
        self.errant = ()
        self._record("that it is no longer errant", errant=None)

    def _recover_relay(self) -> None:
        """Once per mysqld start, before the first election position: what the relay log kept
        is applied, so that this node's claim is what it acknowledged before it stopped."""
        self.relay_kept = False  # once: a failure must not hold up the election
        try:
            before, after = self.mysql.apply_relay_log(Path(self.s.datadir))
        except MySQLError as exc:
            log.error("could not apply the relay log kept from before mysqld restarted: %s. "
                      "This node takes part in the election with what it applied (%s); a "
                      "commit only that relay log held is then kept only if another node has "
                      "it", exc, self.applied or "(empty)")
            return
        if after != before:
            log.warning("applied from the relay log what this node had received before mysqld "
                        "restarted (GTID replication would have discarded it): %s -> %s",
                        before or "(empty)", after)
        else:
            log.info("relay log: nothing received beyond %s before mysqld restarted",
                     before or "(empty)")
        self._wake()

    def _clear_position(self) -> None:
        if self.published is not None:
            self.consul.clear_position(self.s.node_name)
            self.published = None

    def _mark_errant(self, o: Observation) -> None:
        base = gtid.parse(self.leader.gtid) if self.leader and self.leader.gtid else {}
        try:
            found = tuple(self.mysql.binlog_gtids_after(dict(base)))
        except MySQLError as exc:
            log.warning("could not list the errant GTIDs from our binary log: %s", exc)
            found = ()
        self.errant = found or tuple(gtid.ahead_of(gtid.parse(o.gtid), base)) or (o.gtid,)
        self._record("its errant transactions", errant=list(self.errant))
        self.mysql.execute("STOP SLAVE")
        log.error("this node holds transactions the primary %s never had: %s. It stays "
                  "read-only, out of replication and unhealthy until it is re-provisioned",
                  o.leader, ", ".join(self.errant))
