"""Elections, membership and the acknowledgement set: the rules that keep autopilot-mysql's two
promises, written as the invariants they keep (as Raft's paper states its safety property).
Pure functions of values; the node observes and acts, Consul stores. Unit tests name each
invariant (tests/unit/test_election.py).

The promises: (A) no commit acknowledged to a client is ever lost by a failover; (B) never two
writable primaries.

Terms.
- The *lock*: the Consul key service/<name>/leader, held by a session. Its holder is the only
  node that may open for writes.
- The *acknowledgement set* M, in the Consul key service/<name>/sync, written only by the lock
  holder in a transaction that checks its session holds the lock: the replicas that may
  acknowledge commits (MariaDB's semi-sync master waits for any one connected semi-sync
  replica, and cannot be told which).
- *synced*: a flag beside M. True: every acknowledged commit is on the primary and on at least
  one member of M. False: acknowledged commits may exist on the primary only.
- The *high-water mark* hwm, beside M: a position that some node other than the primary is
  known to have received.
- A node's *data id*: a random id minted whenever its data directory is created (first boot,
  restore, rebuild). A member of M is a node *with* a data id: the same name on replaced data
  is not that member any more.

Invariants.
I1 (lock)   Only the lock holder is writable, and only while its lease holds: its last
            heartbeat (a Consul transaction that checks its session holds the lock) was sent
            less than `lease` seconds ago. The watchdog fences it when the lease runs out.
I2 (ack)    A replica acknowledges only while it is in M: it turns semi-sync on only when it
            sees itself in M, and the primary shuts out (an account lock on the primary for
            that replica's address) any member before removing it from M.
I3 (synced) synced goes from False to True only once, with semi-sync on and no fall-back
            possible, a member of M has received the primary's whole binary log as it was at
            a moment T after which only members could acknowledge. synced goes to False
            (recorded first) before the primary acknowledges a commit without a replica.
I4 (remove) A member leaves M only after it was shut out at T and another member has
            received everything the primary had at T; the last member never leaves: the set
            becomes unsynced instead (I3).
I5 (elect)  A node may take a free lock only when (a) it holds the published position of
            every node that may have an acknowledged commit it lacks: every member of M if
            synced, else the primary that wrote M; (b) its position covers each of those, the
            hwm, and the position a primary handing over recorded; (c) no published position
            is better. Positions are published under the candidate's session, each with the
            *term* it was published for: the Consul index of M at that moment (only a lock
            holder writes M, and it does before it opens, so a free lock leaves it unchanged
            and a term that wrote anything moved it). A position of another term counts for
            nothing: it may predate commits its node received since (nemesis seed 157636295:
            a restarted node's earlier position, still held by its dead session, let a
            less advanced node win). The lock is taken in a transaction that checks M did not
            change since it was read. There is no time-out on (a): the cluster stays
            read-only and says why instead.
I6 (open)   The new holder opens for writes only after it applied everything it received and
            the old primary's lease surely ran out: `grace_ends` (counted by its own clock
            from when it first saw the old primary's last heartbeat), or at once after a
            handover, where the old primary fenced itself before releasing the lock.
I7 (force)  An operator may name a candidate that takes the lock without (a)-(b); it is
            recorded in Consul, and I1 and I6 still hold.
I8 (recover) mysqld's crash recovery may truncate commits its binary log holds but InnoDB did
            not durably commit (MariaDB's semi-sync recovery, --init-rpl-role=SLAVE) only on
            the node that wrote them as primary: never acknowledged, or acknowledged by a
            replica. So only a node that was the primary (it wrote the current set, or it was
            writable during its last mysqld run), and never a replica: a replica's binary log
            holds what a primary sent it, acknowledged perhaps, and the primary may truncate
            its own copy (nemesis seed 157636295: both truncated an acknowledged commit). It
            may not either when this node may hold acknowledged commits no other node has:
            when it wrote an unsynced set, or when the set cannot be read. Those commits then
            survive as the normal recovery commits them (errant at worst, re-provisioned,
            never lost).
I9 (relay)  A member of M acknowledges what it *received*; MariaDB's GTID replication throws a
            restarted replica's relay log away at its next START SLAVE and re-fetches from the
            primary, which may be gone. So a member whose mysqld restarted applies its relay
            log beyond what it holds (mysql/server.py apply_relay_log) before it publishes a
            position or replicates: its claim stays what it acknowledged. A non-member's relay
            log holds no acknowledgement (I2), and is left to replication.
I10 (handover) A switchover's target may take the lock on the handover alone, without the
            positions I5(a) names: the old primary fenced itself (read_only, no commit in
            flight) at `gtid`, then recorded it with its target and M's index, releasing the
            lock in the same transaction that checked its session held it. Every acknowledged
            commit of every term is in its binary log up to `gtid` (it covered its own
            election's), so a target that applied `gtid` holds them all, and no other position
            can hold more (replicas receive from the primary only; an errant node is never in
            M). Only in the term the handover was recorded in (M's index unchanged), and in a
            transaction that checks both the handover and M are unchanged; the old primary
            fenced first, so I6 holds without a grace. The first M of the new term keeps the
            old M's members and takes the old primary in, so acknowledgements never pause.

(A) follows from I2-I5 and I9: an acknowledged commit is on a member of M (or on the unsynced
primary), the winner holds every such position, and replicas receive the binary log in order.
(B) follows from I1 and I6: leases are counted from heartbeats that prove the lock, and the new
primary waits out the old lease before it opens.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from . import gtid


@dataclass(frozen=True)
class SyncState:
    """The Consul key service/<name>/sync (I2-I4)."""

    primary: str  # the lock holder that wrote it
    primary_data: str  # its data id
    members: tuple[tuple[str, str], ...] = ()  # (node, data id) that may acknowledge
    synced: bool = False
    hwm: str = ""  # a position a node other than the primary is known to hold
    index: int = 0  # Consul's ModifyIndex, for check-and-set (0: the key does not exist)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.members)

    def data_of(self, node: str) -> str | None:
        return next((d for n, d in self.members if n == node), None)

    def with_members(self, members: Mapping[str, str]) -> SyncState:
        return SyncState(self.primary, self.primary_data, tuple(sorted(members.items())),
                         self.synced and bool(members), self.hwm, self.index)

    def doc(self) -> dict[str, object]:
        return {"primary": self.primary, "primary_data": self.primary_data,
                "members": {n: d for n, d in self.members}, "synced": self.synced,
                "hwm": self.hwm}


@dataclass(frozen=True)
class Published:
    """A node's position for an election, in a Consul key tied to its session."""

    node: str
    gtid: str
    data: str = ""  # its data id
    can_apply: bool = True  # False: its SQL thread fails, it cannot open with what it holds
    term: int = 0  # the acknowledgement set's index it was published for (I5); -1: unknown
    primary: bool = False  # its last role was the primary's (ties go to it: election.I5)


def term(sync: SyncState | None) -> int:
    """I5: the election term a position is published for: the acknowledgement set's Consul
    index (0 when none was ever written)."""
    return sync.index if sync is not None else 0


class Verdict(StrEnum):
    TAKE = "take"  # this node takes the lock
    DEFER = "defer"  # another node should take it
    WAIT = "wait"  # positions still missing that may arrive
    BLOCKED = "blocked"  # no node may take it automatically: an operator must act


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str
    winner: str | None = None
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class Handover:
    """A switchover: the old primary fenced itself at `gtid`, then released the lock."""

    from_node: str
    gtid: str
    to: str = ""  # the requested target; "" = the best replica
    term: int = -1  # M's index when it was recorded (I10); -1: unknown (no take-over)
    index: int = 0  # Consul's ModifyIndex of the record (the take-over checks it)


def may_take_over(h: Handover | None, node: str, sync: SyncState | None) -> bool:
    """I10: may `node` take the free lock on this handover alone?"""
    return (h is not None and h.to == node and h.from_node != node and bool(h.gtid)
            and h.term >= 0 and h.term == term(sync))


def handover_followers(winner: str, held: str, sync: SyncState | None, h: Handover,
                       positions: Sequence[Published]) -> tuple[dict[str, str], dict[str, str]]:
    """I10: the first acknowledgement set after a take-over, as node -> data id, and the
    nodes left out with why (as term_followers): the old set's members with their recorded
    data ids, the old primary with the data id it wrote M with, and every node that
    published a position in this term; but never one whose published position holds what
    the winner lacks."""
    current = term(sync)
    published = [p for p in positions if p.term == current]
    members, left_out = term_followers(winner, held, published)
    candidates: dict[str, str] = dict(sync.members) if sync is not None else {}
    if sync is not None and sync.primary == h.from_node:
        candidates[sync.primary] = sync.primary_data
    for node, data in candidates.items():
        if node != winner and node not in left_out:
            members.setdefault(node, data)
    return members, left_out


def handover_target(sync: SyncState | None, healthy: Sequence[str],
                    lag: Mapping[str, float | None]) -> str:
    """A switchover to "the best replica", chosen by the primary before it hands over (I10
    then lets the target take the lock at once): a healthy member of M (it received every
    acknowledged commit), the least behind in applying (`lag`: seconds, None unknown), then
    by name; else any healthy node the same way. "" = nobody healthy (an election chooses)."""
    members = set(sync.names) if sync is not None else set()

    def key(n: str) -> tuple[bool, float, str]:
        behind = lag.get(n)
        return (n not in members, float("inf") if behind is None else behind, n)
    ordered = sorted(healthy, key=key)
    return ordered[0] if ordered else ""


def required(sync: SyncState | None) -> tuple[tuple[str, str], ...]:
    """I5(a): the (node, data id) pairs whose published positions an election needs: every
    member of M when synced, else the primary that wrote M (only it is sure to hold what it
    acknowledged). An empty answer: no acknowledgement set was ever recorded (a new cluster)."""
    if sync is None:
        return ()
    if sync.synced:
        return sync.members
    return ((sync.primary, sync.primary_data),)


FORCE_HINT = ("autopilot-mysql failover --candidate NODE --force (it is recorded in Consul, "
              "and commits only the missing nodes hold are lost)")


def awaited_voters(healthy: Sequence[str], last_leader: str | None,
                   sync: SyncState | None) -> tuple[str, ...]:
    """Whose positions an election waits for, a little, beyond what the invariants need: the
    healthy members but the last leader (a failover must not wait for the node that just
    failed, which Consul may still list as passing). Except when Consul holds no
    acknowledgement set although we saw a leader: Consul lost its data (rebuilt from
    empty), the last leader most likely lives and only lost its lock, and it should keep its
    role (clients and routers keep their primary): it is awaited too, whether or not the
    rebuilt catalog lists it yet."""
    voters = tuple(n for n in healthy if n != last_leader)
    if sync is None and last_leader is not None:
        voters += (last_leader,)
    return voters


def decide_election(me: str, positions: Mapping[str, Published], sync: SyncState | None, *,
                    voters: Sequence[str] = (), voters_waited: float = 0.0,
                    voter_timeout: float = 4.0, handover: Handover | None = None,
                    forced: str | None = None) -> Outcome:
    """Who takes the free lock (I5, I7). `positions` are the published ones, ours included;
    `voters` are other healthy nodes whose positions we wait for up to `voter_timeout` even
    though the invariants do not need them (the most advanced node should win)."""
    if forced:
        if forced == me:
            return Outcome(Verdict.TAKE, f"an operator forced this node to take over ({forced})",
                           winner=me)
        return Outcome(Verdict.DEFER, f"an operator forced {forced} to take over", winner=forced)
    current = term(sync)
    positions = {n: p for n, p in positions.items() if p.term == current}  # I5: this term's
    readable: dict[str, gtid.Position] = {}
    for node, p in positions.items():
        try:
            readable[node] = gtid.parse(p.gtid)
        except ValueError:
            continue  # an unreadable position is no candidate (and no proof of anything)
    # (a) every node that may hold an acknowledged commit has published, on the same data.
    missing: list[str] = []
    replaced: list[str] = []
    detail: list[str] = []
    for node, data in required(sync):
        got = positions.get(node)
        if got is None or node not in readable:
            missing.append(node)
        elif data and got.data != data:
            replaced.append(node)
            detail.append(f"{node} (data id {got.data or 'unknown'} now, {data} as a member)")
    why = ("members of the acknowledgement set (each may hold acknowledged commits no other "
           "node has)" if sync is not None and sync.synced else
           "the last primary (it acknowledged commits without a synchronous replica, so only "
           "it is sure to have them)")
    if replaced:
        return Outcome(Verdict.BLOCKED, f"no automatic failover: the data of {', '.join(detail)}"
                       f", {why}, was replaced since it joined; acknowledged commits may be "
                       f"lost with it. Bring the old data back, or accept the loss: {FORCE_HINT}",
                       missing=tuple(replaced))
    if missing:
        return Outcome(Verdict.WAIT, f"waiting for the positions of {', '.join(missing)}, {why}; "
                       f"the cluster stays read-only until they publish. If they are lost for "
                       f"good: {FORCE_HINT}", missing=tuple(missing))
    # Healthy voters beyond what the invariants need: wait a little, for the best choice.
    late = [v for v in voters if v not in readable]
    if late and voters_waited < voter_timeout:
        return Outcome(Verdict.WAIT, f"waiting up to {voter_timeout - voters_waited:.1f}s for the "
                       f"positions of {', '.join(late)}", missing=tuple(late))
    candidates = {n: pos for n, pos in readable.items() if positions[n].can_apply}
    if not candidates:
        return Outcome(Verdict.WAIT, "no readable position to compare")
    # Among nodes that hold as much as every other, a switchover's target, else the one
    # whose last role was the primary's (its lock lost while it lived: a Consul outage or
    # rebuild; clients and routers keep their primary), else the lowest name. All from
    # published values: every node names the same one.
    was = [n for n in candidates if positions[n].primary]
    best = gtid.best_candidate(candidates, preferred=handover.to if handover else
                               was[0] if len(was) == 1 else None)
    assert best is not None
    # (b) the winner covers every position that may hold acknowledged commits, the hwm and a
    # handover's recorded position; (c) it is the best of all published.
    must: list[tuple[str, gtid.Position]] = [(n, readable[n]) for n, _ in required(sync)]
    for n, pos in readable.items():
        if not positions[n].can_apply:
            must.append((n, pos))  # what a broken node holds must still be covered
    if sync is not None and sync.hwm:
        must.append(("the high-water mark", gtid.parse(sync.hwm)))
    if handover is not None and handover.gtid:
        must.append((f"{handover.from_node}'s handover position", gtid.parse(handover.gtid)))
    short = [f"{what} {gtid.render(pos)}" for what, pos in must
             if not gtid.covers(candidates[best], pos)]
    if short:
        stuck = ", ".join(n for n, p in positions.items() if not p.can_apply)
        return Outcome(Verdict.BLOCKED, f"no node may take over: the most advanced, {best} "
                       f"({gtid.render(candidates[best]) or 'empty'}), lacks {'; '.join(short)}"
                       + (f" (and {stuck} cannot apply what it holds)" if stuck else "")
                       + f". Bring back a node that has them, or accept the loss: {FORCE_HINT}")
    if best != me:
        return Outcome(Verdict.DEFER, f"{best} is at least as far ahead "
                       f"({gtid.render(candidates[best]) or 'empty'}) as this node", winner=best)
    others = ", ".join(f"{n} {gtid.render(p) or 'empty'}" for n, p in sorted(readable.items())
                       if n != me) or "no other candidate"
    return Outcome(Verdict.TAKE, f"this node is the most advanced "
                   f"({gtid.render(candidates[me]) or 'empty'}; {others})", winner=me)


def beyond(theirs: str, ours: str) -> str:
    """The transactions a node's position `theirs` holds that `ours` lacks, as GTID ranges
    ("" = none, or either position unreadable): a primary at `ours` refuses that node as
    errant."""
    try:
        return ", ".join(gtid.ahead_of(gtid.parse(theirs), gtid.parse(ours)))
    except ValueError:
        return ""


def term_followers(winner: str, held: str, positions: Sequence[Published]
                   ) -> tuple[dict[str, str], dict[str, str]]:
    """The new primary's first acknowledgement set (I3: the nodes that took part in the
    election follow it), as node -> data id, and the nodes left out, with why: those whose
    published position holds transactions the winner lacks. The winner will refuse them as
    errant; taken in, such a node stays a member, acknowledging nothing, until the I4 proof
    removes it, and if it is re-provisioned meanwhile every election after waits on its old
    data (nemesis seed 326437764). The primary's keeper admits no such node later either
    (ackset.py). An unreadable position is taken in: the member's own cycle sorts it out.
    `held`: the winner's position as it opens."""
    members: dict[str, str] = {}
    left_out: dict[str, str] = {}
    for p in positions:
        if p.node == winner:
            continue
        extra = beyond(p.gtid, held)
        if extra:
            left_out[p.node] = f"its position {p.gtid} holds {extra}, which we lack"
        else:
            members[p.node] = p.data
    return members, left_out


def reopen_followers(winner: str, winner_data: str, held: str, sync: SyncState | None,
                     attached: Collection[str], received: Mapping[str, str],
                     data_now: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """I3 for a primary that opens again over its own set and data: its lease lapsed and it
    fenced, but nobody opened since (a new primary writes its own set before it opens). The
    members of that set still attached to it stay members, as node -> data id, and may
    acknowledge at once: dropped, each would have to join again while the primary
    acknowledged alone, and a lost host in that window needs an operator (CI, 2026-12-07).
    As with term_followers, a member whose reported position (`received`, node -> position)
    holds what we lack at `held` is left out, with why (the keeper admits no such node).
    Only a member whose own status reports the data id recorded for it (`data_now`) is kept:
    one re-provisioned since is not the same member (nemesis seed 23971: kept under its old
    data id, it blocked every election after), and joins again with its new data."""
    if sync is None or sync.primary != winner or sync.primary_data != winner_data:
        return {}, {}
    members: dict[str, str] = {}
    left_out: dict[str, str] = {}
    for n, d in sync.members:
        if n not in attached or data_now.get(n) != d:
            continue
        extra = beyond(received.get(n, ""), held)
        if extra:
            left_out[n] = f"its position {received[n]} holds {extra}, which we lack"
        else:
            members[n] = d
    return members, left_out


def may_truncate_unacknowledged(sync: SyncState | None, node: str, known: bool,
                                was_primary: bool = False) -> bool:
    """I8: may this node's next mysqld start truncate what was never durably committed?
    `known`: the set was read (False: Consul unreachable, so the answer is no);
    `was_primary`: it was writable during its last mysqld run."""
    if not known or sync is None:
        return False
    if sync.primary == node and not sync.synced:
        return False
    return sync.primary == node or was_primary


# The old primary's watchdog period plus its fence (SET read_only, or crashing mysqld when
# commits wait), plus scheduling slack: added to a lease before another node relies on it.
GRACE_MARGIN = 0.7


def grace_ends(last_heartbeat_seen: float, lease: float, margin: float = GRACE_MARGIN) -> float:
    """I6: the monotonic time (of the observer's clock) after which the old primary's lease
    surely ran out. `last_heartbeat_seen` is when this node first saw the old primary's last
    heartbeat (no heartbeat can follow once its session is gone: each one checks the lock);
    the heartbeat was sent before it was seen, so its lease ends before this returns.
    `margin` covers the old primary's watchdog period and the time its fence takes."""
    return last_heartbeat_seen + lease + margin


# --- the primary's side: keeping M (I2-I4) ------------------------------------------------------

@dataclass(frozen=True)
class ReplicaView:
    """What the primary knows of one replica this cycle."""

    node: str
    data: str = ""
    connected: bool = False  # in SHOW SLAVE HOSTS: its IO thread is attached to us
    passing: bool = False  # its Consul check passes
    follows_us: bool = False  # its own status names us as the primary
    received: str | None = None  # its received position as it reported it (None: unknown)
    errant: bool = False
    shut_out: bool = False  # we locked its account for its address
    away_since: float | None = None  # when we first saw a member not connected
    eligible: bool = True  # False: tagged NOFAILOVER, never admitted (it would be required)


class Step(StrEnum):
    ADD = "add"  # write M + node, then let it in (lift its shut-out)
    SHUT_OUT = "shut_out"  # lock its account and drop its connection (removal, step 1)
    REMOVE = "remove"  # write M - node (removal, step 2, once proven)
    UNSYNC = "unsync"  # write synced=False, then turn semi-sync off (acknowledge alone)
    SEMI_SYNC_ON = "semi_sync_on"  # a member is connected: commits wait for it again
    SYNC = "sync"  # write synced=True with the proven position as hwm (I3)
    HWM = "hwm"  # write a newer, proven hwm


@dataclass(frozen=True)
class Plan:
    steps: tuple[tuple[Step, str], ...] = ()  # (step, node or position)
    reason: str = ""


@dataclass(frozen=True)
class SyncTarget:
    """The primary's position at a moment T, awaiting proof that a member received it: for
    I3 ("sync"), for I4 ("remove:<node>", T being when <node> was shut out), for the hwm."""

    at: float
    gtid: str
    purpose: str


def proven_by(target: SyncTarget, sync: SyncState,
              replicas: Mapping[str, ReplicaView]) -> str | None:
    """A connected member of M (not the one being removed) that received `target.gtid`."""
    leaving = target.purpose.split(":", 1)[1] if target.purpose.startswith("remove:") else ""
    want = gtid.parse(target.gtid)
    for node in sync.names:
        view = replicas.get(node)
        if node == leaving or view is None or not view.connected or view.received is None:
            continue
        try:
            if gtid.covers(gtid.parse(view.received), want):
                return node
        except ValueError:
            continue
    return None


def _away(view: ReplicaView | None, now: float) -> float:
    """Seconds a member has been detached (unknown to us: as long as it takes)."""
    if view is None:
        return float("inf")
    return 0.0 if view.away_since is None else now - view.away_since


def plan_sync(sync: SyncState, replicas: Mapping[str, ReplicaView], *, now: float,
              semi_sync_on: bool, waiting_since: float | None, semi_sync_timeout: float,
              remove_after: float, targets: Sequence[SyncTarget]) -> Plan:
    """The primary's next steps for M, from what it sees this cycle.

    `semi_sync_on`: MariaDB's semi-sync master is enabled (it never falls back by itself: the
    timeout is infinite, SEMI_SYNC_TIMEOUT is ours). `waiting_since`: since when commits
    wait for an acknowledgement without one arriving (None: nothing waits). `targets`:
    positions awaiting proof, set by earlier steps."""
    members = set(sync.names)
    steps: list[tuple[Step, str]] = []
    why: list[str] = []
    connected = sorted(n for n in members if n in replicas and replicas[n].connected)
    pending = {t.purpose.split(":", 1)[1] for t in targets if t.purpose.startswith("remove:")}

    # I2: replicas that follow us join M first; only then do they acknowledge. A healthy
    # replica that names us is admitted before it connects: a former primary connects only
    # once admitted (as a semi-sync replica it receives its own transactions back).
    joining = []
    for r in sorted(replicas.values(), key=lambda r: r.node):
        if r.node not in members and not r.errant and r.passing and r.follows_us \
                and r.eligible:
            steps.append((Step.ADD, r.node))
            why.append(f"{r.node} joins the acknowledgement set")
            if r.connected:
                joining.append(r.node)
    # I4 step 2: a shut-out member leaves once another member has all it could acknowledge.
    for t in targets:
        node = t.purpose.split(":", 1)[1] if t.purpose.startswith("remove:") else ""
        if node in members and len(members) > 1:
            by = proven_by(t, sync, replicas)
            if by is not None:
                steps.append((Step.REMOVE, node))
                why.append(f"{node} leaves the acknowledgement set ({by} holds everything it "
                           "could have acknowledged)")
    # I4 step 1: a member away too long is shut out (it stays a member until proven).
    for node in sorted(members - pending):
        view = replicas.get(node)
        away = view.away_since if view is not None else None
        gone = view is None or not view.connected
        if gone and away is not None and now - away >= remove_after and len(members) > 1:
            steps.append((Step.SHUT_OUT, node))
            why.append(f"{node} has been away for {now - away:.1f}s: shutting it out, so it "
                       "cannot acknowledge, before it leaves the acknowledgement set")
    # I3: acknowledging alone is recorded first; coming back is proven.
    if semi_sync_on and not members:
        steps.append((Step.UNSYNC, ""))
        why.append("no replica in the acknowledgement set: commits are acknowledged alone")
    elif semi_sync_on and semi_sync_timeout > 0 and not connected and not joining and all(
            _away(replicas.get(n), now) >= remove_after for n in members):
        # Nobody can acknowledge, and has not for a while: acknowledge alone now rather
        # than make the next commit wait SEMI_SYNC_TIMEOUT (never with SEMI_SYNC_TIMEOUT=0).
        steps.append((Step.UNSYNC, ""))
        why.append(f"no member of the acknowledgement set ({', '.join(sorted(members))}) has "
                   f"been connected for {remove_after:g}s: commits are acknowledged alone")
    elif semi_sync_on and waiting_since is not None and semi_sync_timeout > 0 \
            and now - waiting_since >= semi_sync_timeout:
        steps.append((Step.UNSYNC, ""))
        why.append(f"commits waited {now - waiting_since:.1f}s for an acknowledgement "
                   f"(SEMI_SYNC_TIMEOUT {semi_sync_timeout:g}s; connected members: "
                   f"{', '.join(connected) or 'none'})")
    elif not semi_sync_on and (connected or joining):
        # A member that joins this cycle (written first, just above) counts: commits wait
        # until it restarts its IO thread with acknowledgements on, a moment later.
        steps.append((Step.SEMI_SYNC_ON, ""))
        why.append(f"{', '.join(connected + joining)} connected: commits wait for an "
                   "acknowledgement again")
    elif semi_sync_on:
        for t in targets:
            by = proven_by(t, sync, replicas) if t.purpose in ("sync", "hwm") else None
            if by is None:
                continue
            if t.purpose == "sync" and not sync.synced:
                steps.append((Step.SYNC, t.gtid))
                why.append(f"{by} holds every commit up to {t.gtid or '(none yet)'}: "
                           "automatic failover is safe again")
            elif t.purpose == "hwm" and sync.synced and t.gtid != sync.hwm:
                steps.append((Step.HWM, t.gtid))
    return Plan(tuple(steps), "; ".join(why))
