"""The primary's keeper of the acknowledgement set: it observes what election.plan_sync needs
(replicas attached to us, their reported positions, commits waiting for an acknowledgement),
asks it for the next steps and carries them out, always in the order the invariants need:
- join (I2): write M + node first; only then lift a shut-out;
- leave (I4): shut out and drop the connection first; write M - node once another member
  provably holds everything the leaving one could have acknowledged;
- acknowledge alone (I3): write synced=False first; only then turn semi-sync off;
- synced again (I3): turn semi-sync on, note the position, write synced=True once a member
  provably received it.
Every write is a transaction that checks our session still holds the lock (dcs.write_sync);
a write that fails leaves MariaDB as it was, and the step is tried again next cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from . import election
from .dcs import Consul
from .election import Plan, ReplicaView, Step, SyncState, SyncTarget
from .exceptions import DCSError, MySQLError
from .model import Member
from .mysql.server import LocalServer
from .peers import Peers
from .utils import Clock

log = logging.getLogger(__name__)
REMOVE_AFTER = 3.0  # seconds a member may be detached before it is shut out
HWM_EVERY = 5.0  # seconds between high-water mark proofs while commits happen


class AckSetKeeper:
    def __init__(self, *, node: str, consul: Consul, mysql: LocalServer, peers: Peers,
                 clock: Clock, repl_user: str, semi_sync_timeout: float,
                 status_max_age: float) -> None:
        self.node = node
        self.consul = consul
        self.mysql = mysql
        self.peers = peers
        self.clock = clock
        self.repl_user = repl_user
        self.semi_sync_timeout = semi_sync_timeout
        self.status_max_age = status_max_age
        self.sync: SyncState | None = None  # what we last wrote (our term), or read
        self.targets: list[SyncTarget] = []
        self.away_since: dict[str, float] = {}
        self.shut_out: dict[str, str] = {}  # node -> address we keep out
        self.waiting: tuple[float, int] | None = None  # (since, yes_tx then)
        self.last_hwm_at = 0.0
        self.last_plan = ""
        self.left_out: dict[str, str] = {}  # node -> what it holds beyond us (logged once)
        # The last cycle found nothing to do and nothing to wait for: the loop may look less
        # often (node.LocalNode.beat) until something changes.
        self.settled = False

    # --- a term begins ----------------------------------------------------------------------

    def term_set(self, data: str, old: SyncState | None,
                 followers: Mapping[str, str]) -> SyncState:
        """Our term's first acknowledgement set (election.I3: not synced yet; the nodes that
        took part in the election will follow us), to be written over `old` (its index)."""
        base = old or SyncState(primary=self.node, primary_data=data)
        return SyncState(primary=self.node, primary_data=data,
                         members=tuple(sorted((n, d) for n, d in followers.items()
                                              if n != self.node)),
                         synced=False, hwm=base.hwm, index=base.index)

    def start_term(self, session: str, data: str, old: SyncState | None,
                   followers: Mapping[str, str]) -> SyncState | None:
        """Write our term's first set before we open. None: the write failed."""
        new = self.consul.write_sync(session, self.term_set(data, old, followers))
        if new is None:
            return None
        self.began(new)
        return new

    def began(self, new: SyncState) -> None:
        """Our term's first set is written (by start_term, or with the lock: a take-over)."""
        self.sync = new
        self.settled = False
        self.targets.clear()
        self.away_since.clear()
        self.waiting = None
        for address in self.mysql.shut_out_addresses(self.repl_user):
            self.mysql.let_in(self.repl_user, address)  # a former term's, or a restored copy's
        self.shut_out.clear()

    # --- every cycle while primary -----------------------------------------------------------

    def tend(self, session: str, current: SyncState | None, members: tuple[Member, ...],
             addresses: Mapping[str, str]) -> None:
        """One cycle. `current`: the set as this cycle read it; `members`: Consul's view of
        the service; `addresses`: node -> address of every node we may need to reach."""
        if current is None or current.primary != self.node:
            return  # our term's set is not written yet (start_term failed): nothing to keep
        if self.sync is None or self.sync.primary != self.node or current.index >= self.sync.index:
            self.sync = current
        # else: our own last write is newer than this cycle's read (a settled primary reads
        # the keys only every few seconds, and a watch held up by a silent Consul server
        # wakes nobody): planned on the older set, a member we just wrote in would join
        # again, every write would fail its index check, and a set without members would
        # turn acknowledgements off while one is connected (the CI run of 2026-12-07).
        current = self.sync
        now = self.clock.monotonic()
        st = self.mysql.primary_state()
        attached = self.mysql.attached_replicas()
        if st.wait_sessions == 0:
            self.waiting = None
        elif self.waiting is None or st.yes_tx != self.waiting[1]:
            self.waiting = (now, st.yes_tx)  # (still) waiting, but acknowledgements arrive
        passing = {m.node for m in members if m.passing}
        nofailover = {m.node for m in members if m.nofailover}
        others = (set(current.names) | attached | {m.node for m in members}) - {self.node}
        self.peers.want({n: addresses[n] for n in others if n in addresses})
        views: dict[str, ReplicaView] = {}
        for n in others:
            doc = self.peers.status(n, self.status_max_age) or {}
            connected = n in attached
            member_data = current.data_of(n)
            if member_data and doc.get("data_id") and doc["data_id"] != member_data:
                # Its data was replaced (a rebuild): the member as recorded is gone, whatever
                # connects under its name. It leaves as a member away does (I4), and joins
                # again with its new data.
                connected = False
            if connected or n not in current.names:
                self.away_since.pop(n, None)
            else:
                self.away_since.setdefault(n, now)
            views[n] = ReplicaView(
                node=n, data=str(doc.get("data_id") or current.data_of(n) or ""),
                connected=connected, passing=n in passing,
                follows_us=doc.get("leader") == self.node,
                received=str(doc["gtid_current_pos"]) if "gtid_current_pos" in doc else None,
                errant=bool(doc.get("errant")) or bool(doc.get("behind")),
                shut_out=n in self.shut_out, away_since=self.away_since.get(n),
                eligible=n not in nofailover)
        if current.synced and st.binlog_pos != current.hwm and now - self.last_hwm_at >= HWM_EVERY \
                and not any(t.purpose == "hwm" for t in self.targets):
            self.targets.append(SyncTarget(now, st.binlog_pos, "hwm"))
            self.last_hwm_at = now
        if self.targets:
            self.peers.poke()
        plan = election.plan_sync(
            current, views, now=now, semi_sync_on=st.semi_sync_on,
            waiting_since=self.waiting[0] if self.waiting else None,
            semi_sync_timeout=self.semi_sync_timeout, remove_after=REMOVE_AFTER,
            targets=self.targets)
        if plan.steps:
            self._carry_out(session, plan, views, addresses)
        # Nothing to prove, write or time: every member attached, no commit waiting.
        self.settled = not plan.steps and not self.targets and self.waiting is None \
            and not self.away_since

    def _beyond_us(self, view: ReplicaView) -> str:
        """What a replica reports holding that we lack ("" = nothing, or unknown): such a
        node is refused as errant, and a member re-provisioned before the I4 proof removes
        it blocks every election after (election.term_followers)."""
        if not view.received:
            return ""
        return election.beyond(view.received, self.mysql.vars().position)

    def _carry_out(self, session: str, plan: Plan, views: Mapping[str, ReplicaView],
                   addresses: Mapping[str, str]) -> None:
        if plan.reason and plan.reason != self.last_plan:
            log.info("acknowledgement set: %s", plan.reason)
            self.last_plan = plan.reason
        assert self.sync is not None
        wrote = False  # one write of the set per cycle: the next needs the index it creates
        for step, arg in plan.steps:
            sync = self.sync
            if wrote and step in (Step.ADD, Step.REMOVE, Step.SYNC, Step.HWM) or \
                    wrote and step == Step.UNSYNC and sync.synced:
                continue
            if step == Step.SEMI_SYNC_ON and not (wrote or any(
                    n in sync.names and views[n].connected for n in views)):
                continue  # the member it counted on did not join after all
            try:
                if step == Step.ADD:
                    extra = self._beyond_us(views[arg])
                    if extra:
                        if self.left_out.get(arg) != extra:
                            log.warning("%s is not admitted to the acknowledgement set: its "
                                        "position holds %s, which we lack (it will be refused "
                                        "as errant, and re-provisioned)", arg, extra)
                            self.left_out[arg] = extra
                        continue
                    members = dict(sync.members)
                    members[arg] = views[arg].data
                    if self._write(session, sync.with_members(members)):
                        wrote = True
                        address = self.shut_out.pop(arg, None)
                        if address:
                            self.mysql.let_in(self.repl_user, address)
                        self.targets = [t for t in self.targets if t.purpose != f"remove:{arg}"]
                elif step == Step.SHUT_OUT:
                    address = addresses.get(arg)
                    if not address:
                        log.warning("cannot shut %s out: its address is unknown", arg)
                        continue
                    dropped = self.mysql.shut_out(self.repl_user, address)
                    self.shut_out[arg] = address
                    pos = self.mysql.primary_state().binlog_pos
                    self.targets.append(SyncTarget(self.clock.monotonic(), pos, f"remove:{arg}"))
                    log.warning("shut %s (%s) out: it cannot acknowledge (or replicate) until it "
                                "is admitted again (%d connection(s) dropped); it leaves the "
                                "acknowledgement set once another member holds %s",
                                arg, address, dropped, pos or "(empty)")
                elif step == Step.REMOVE:
                    members = {n: d for n, d in sync.members if n != arg}
                    if self._write(session, sync.with_members(members)):
                        wrote = True
                        self.targets = [t for t in self.targets if t.purpose != f"remove:{arg}"]
                elif step == Step.UNSYNC:
                    if sync.synced:
                        if not self._write(session, replace(sync, synced=False)):
                            continue  # not recorded: commits keep waiting, never acked alone
                        wrote = True
                    self.mysql.set_semi_sync_primary(False)
                    self.targets = [t for t in self.targets if t.purpose.startswith("remove:")]
                    log.warning("acknowledging commits without a replica (recorded in Consul "
                                "first): until a member catches up, no other node may take over "
                                "automatically")
                elif step == Step.SEMI_SYNC_ON:
                    self.mysql.set_semi_sync_primary(True)
                    pos = self.mysql.primary_state().binlog_pos
                    self.targets.append(SyncTarget(self.clock.monotonic(), pos, "sync"))
                elif step in (Step.SYNC, Step.HWM) and \
                        self._write(session, replace(sync, synced=True, hwm=arg)):
                    wrote = True
                    self.targets = [t for t in self.targets if t.purpose not in ("sync", "hwm")]
            except MySQLError as exc:
                log.error("acknowledgement set: %s %s failed: %s", step.value, arg, exc)
                return

    def note_sync_target(self) -> None:
        """After opening with semi-sync on: prove a member holds what we had then (I3)."""
        pos = self.mysql.primary_state().binlog_pos
        self.targets.append(SyncTarget(self.clock.monotonic(), pos, "sync"))

    def _write(self, session: str, new: SyncState) -> bool:
        try:
            written = self.consul.write_sync(session, new)
        except DCSError as exc:
            log.warning("acknowledgement set not written (%s): retrying next cycle", exc)
            return False
        if written is None:
            log.warning("acknowledgement set not written: our session no longer holds the lock, "
                        "or the set changed meanwhile; retrying after the next read")
            return False
        self.sync = written
        return True
