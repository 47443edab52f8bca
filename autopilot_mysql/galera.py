"""The Galera topology's decisions (TOPOLOGY=galera): who bootstraps, who joins, who writes.
Pure functions of values, beside ha.py (replication's); galera_node.py observes and acts.
Unit tests name each rule (tests/unit/test_galera.py).

Terms.
- The *record*, Consul key service/<name>/galera/cluster: the cluster's Galera UUID, the
  position its last bootstrap started from (seqno), an epoch counted up by every bootstrap,
  who did it and whether an operator forced it. Created once at the first boot; changed only
  by a compare-and-set that also checks every census document it was decided from.
- The *census*, keys service/<name>/galera/state/<node>: each node's own word on itself:
  "down" with the position its data directory holds (grastate.dat, or `mariadbd
  --wsrep-recover` when grastate.dat does not say), "starting" (published before mysqld
  starts: its data may change from now on), "up" (in a Primary Component).
- The *known members*: every node that ever registered (service/<name>/members/<node>, kept
  across restarts). A node that left for good is removed by an operator (consul kv delete),
  or a bootstrap is forced.
- The *writer*: the holder of the leader lock, one Synced node of the Primary Component. All
  others are read-only.
- A Primary Component *exists* when another member says so itself (its GET /status, fresh):
  Consul's catalog still lists members as passing for seconds after a power cut, and a node
  that joined on that waited pc.wait_prim_timeout for a component that was not there.

Rules.
G1 (once)     A new cluster is bootstrapped only by the node whose compare-and-set created the
              record; every other node joins by state transfer once a Primary Component exists.
G2 (census)   With a record and no Primary Component, a bootstrap needs every known member's
              census document, each "down": never a partial census, whatever the wait.
G3 (choice)   Among the census, only data on the record's UUID with a valid seqno may be
              bootstrapped (never an empty, aborted-SST or foreign data directory, never
              safe_to_bootstrap alone); the highest seqno wins, ties to the smallest name.
G4 (forward)  The winner's seqno must be at least the record's: a recovery never goes back
              behind the position a previous bootstrap started from (a member with the newer
              data is missing, or was wiped). Only an operator's forced bootstrap may.
G5 (start)    The winner starts from its position (grastate.dat with safe_to_bootstrap, so the
              cluster keeps its UUID and the others catch up by IST) and with its saved view
              removed; pc.recovery is off everywhere, so no node forms a Primary Component by
              itself.
G6 (writer)   Only the lock holder is writable, only while Synced in a Primary Component and
              while its lease holds; it fences itself (read_only) otherwise. A non-Primary node
              cannot commit at all (Galera refuses), so a writer outside our Primary Component
              is deposed at once; any other new writer waits out the old one's lease first.
G7 (no quorum) A running node that has been outside any Primary Component for
              NON_PRIMARY_GRACE seconds, while Consul (reachable) lists no member serving in
              one and no member says over HTTP that it does, stops mysqld cleanly and takes
              part in the census (G2): otherwise members that are down could never bootstrap
              beside it, nor join it. With Consul unreachable it keeps running (it cannot
              know that no Primary Component exists). A joiner (mysqld does not answer queries
              yet; not a bootstrap) stops the same way once its log's last view is not Primary
              or no member serves in one (its donor died mid-transfer: it would wait for ever,
              and the census with it); its data counts as what --wsrep-recover finds, or as
              none when the state transfer had begun replacing it.
G8 (switch)   A switchover moves the writer role without a lease wait and without losing a
              write: the writer fences itself, records the handover with its last committed
              seqno (a transaction that checks it still holds the lock) and releases the lock;
              the target (or, with none named, the first Synced reader) takes it and opens
              once it has committed up to that seqno. For a few seconds only the target may
              take the lock; then any Synced node may. A handover counts only from the last
              writer a node saw, and is cleared before the new writer opens.
G9 (failsafe) With FAILSAFE on (the default), a writer that cannot reach Consul keeps writing
              while every member that passed its check when Consul last answered, and every
              other member of its Primary Component now, confirms over HTTP that it cannot
              reach Consul either and still knows it as the writer (failsafe.py, as for
              replication); a member that confirms takes no writer lock until that lease,
              plus a margin, ran out by its own clock.
G10 (disk)    A data volume counts as full below DISK_MIN_FREE free, or while mysqld waits for
              space. A reader in that state leaves the component cleanly (its applier would
              stall every commit of the cluster by flow control) and joins again by IST once
              it has room; a writer hands over (G8) to a Synced reader whose own status says it
              has room, or, when none has, says so while writes wait.
G11 (evict)   A member whose Galera port refuses connections (nothing listens there: its
              mysqld is gone, its host's kernel still answers) is evicted from our Primary
              Component at once (evs.evict) instead of after evs.suspect_timeout, during which
              no node of the component can commit, whoever writes. Galera counts an evicted
              member as one that left cleanly (checked here: a node that evicted both others
              of three stayed Primary alone), so the proof must be strong and the rest must
              be a majority without it: only a refusal counts, twice (a silent, paused,
              partitioned or slow member is left to Galera's own timeout); it must be the one
              peer mysqld lost (several lost at once look like a partition, not a death);
              the members left, without those already being evicted, must be more than
              half of our view (never in a cluster of two); one member on that host only,
              never ourselves, only from a Primary Component. The eviction list is cleared
              once the member left the view (its mysqld, restarted, joins under a new
              identity). A node that learns it was evicted (alive after all) stops mysqld
              cleanly and joins again.
G12 (lost record) No record, but a member's data belongs to a Galera cluster: Consul lost
              its data (or the key was deleted), not a new cluster. Nobody bootstraps: a
              down node joins once a member serves in a Primary Component, and a Synced member
              of one records the cluster again (its UUID; its last committed seqno as the
              least a later bootstrap may start from, G4). With every member down, only an
              operator's forced bootstrap starts it (the census cannot know who is missing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .election import Handover
from .model import Action, Decision, ProcState, Role

DOWN, STARTING, UP = "down", "starting", "up"
DATA, NO_DATA = "data", "none"
LEASE_MARGIN = 0.7  # seconds past a writer's lease before another node may open
NON_PRIMARY_GRACE = 15.0  # G7: Galera re-forms a component by itself within this, if it can


@dataclass(frozen=True)
class Record:
    uuid: str  # "" until the first bootstrap's node is Synced and records it
    seqno: int  # the position the last bootstrap started from (-1: a new cluster)
    epoch: int
    by: str
    forced: bool = False
    index: int = 0  # Consul's ModifyIndex (compare-and-set)


@dataclass(frozen=True)
class CensusDoc:
    node: str
    state: str  # DOWN, STARTING, UP
    uuid: str = ""
    seqno: int = -1
    data: str = NO_DATA  # DATA: a data directory that may be bootstrapped from
    index: int = 0

    @property
    def position(self) -> str:
        return f"{self.uuid or '(none)'}:{self.seqno}"


@dataclass(frozen=True)
class Choice:
    node: str | None  # who bootstraps; None: nobody may (reason says why)
    reason: str
    seqno: int = -1
    uuid: str = ""


def choose_bootstrap(record: Record | None, known: tuple[str, ...],
                     census: dict[str, CensusDoc]) -> Choice:
    """G2-G4: who bootstraps a cluster that has no Primary Component, from the census."""
    missing = sorted(n for n in known if n not in census)
    if missing:
        return Choice(None, f"waiting for the census: no state published by {', '.join(missing)}"
                      " (a member that left for good: consul kv delete its members/ key, or "
                      "force a bootstrap with autopilot-mysql galera bootstrap --node NAME "
                      "--force)")
    running = sorted(n for n in known if census[n].state != DOWN)
    if running:
        return Choice(None, "waiting for the census: " + ", ".join(
            f"{n} is {census[n].state}" for n in running) + " (its data may still change)")
    uuid = record.uuid if record else ""
    usable = [d for n, d in census.items() if n in known and d.data == DATA and d.seqno >= 0
              and (not uuid or d.uuid == uuid)]
    if uuid and not usable:
        return Choice(None, f"no member holds data of the cluster {uuid} (census: " + ", ".join(
            f"{d.node} {d.position}" for d in sorted(census.values(), key=lambda d: d.node)
            if d.node in known) + "): nothing may be bootstrapped automatically")
    if not usable:
        return Choice(None, "no member holds data yet")
    uuids = {d.uuid for d in usable}
    if len(uuids) > 1:
        return Choice(None, f"members hold data of different clusters ({', '.join(sorted(uuids))})"
                      " and none is recorded: force a bootstrap from the right one")
    best = sorted(usable, key=lambda d: (-d.seqno, d.node))[0]
    if record is not None and record.uuid and best.seqno < record.seqno:
        return Choice(None, f"the most advanced member, {best.node}, holds seqno {best.seqno}, "
                      f"but the last bootstrap started from {record.seqno}: a member with newer "
                      "data is missing or was wiped. Refusing to go back (G4); bring it back, or "
                      f"force: autopilot-mysql galera bootstrap --node {best.node} --force")
    others = ", ".join(f"{d.node} {d.seqno}" for d in sorted(usable, key=lambda d: d.node)
                       if d is not best)
    return Choice(best.node, f"{best.node} holds the highest position {best.position}"
                  f"{' (others: ' + others + ')' if others else ''}", best.seqno, best.uuid)


@dataclass(frozen=True)
class GaleraObservation:
    node: str
    stopping: bool = False
    mysqld: ProcState = ProcState.STOPPED
    mysqld_restart_in: float = 0.0
    mysql_alive: bool = False
    read_only: bool | None = None
    # wsrep, while mysqld answers
    primary: bool = False  # wsrep_cluster_status = Primary
    synced: bool = False  # Primary, Synced, ready
    state_comment: str = ""
    writer_in_component: bool = False  # the lock holder's address is among our members
    # this node's data, while mysqld is not running
    local: CensusDoc | None = None  # None: not read yet since mysqld stopped
    published: CensusDoc | None = None  # our census document as Consul holds it
    # Consul
    dcs_ok: bool = False
    registered: bool = False
    session: str | None = None
    record: Record | None = None
    known: tuple[str, ...] = ()
    census: dict[str, CensusDoc] = field(default_factory=dict)
    component_exists: bool = False  # another member says (GET /status) it serves in one now
    component_listed: bool = False  # Consul lists another member passing as writer or reader
    joining: str | None = None  # who holds the join lock (one state transfer at a time)
    check_passing: bool = False  # Consul's check of our /health passes
    # seconds mysqld has been outside a Primary Component: answering queries, or (not
    # answering yet, joining) by its log's last view
    non_primary_for: float = 0.0
    evicted: bool = False  # mysqld's log: this run was evicted from the cluster (G11)
    leader: str | None = None
    lease_left: float = 0.0  # our lease as the writer (<= 0: expired or none)
    open_in: float = 0.0  # we hold the lock: seconds until the previous writer surely fenced
    forced: str | None = None  # an operator forced a bootstrap from this node
    last_committed: int = -1  # wsrep_last_committed, while mysqld answers
    readers: tuple[str, ...] = ()  # other members Consul lists as passing readers (Synced)
    switchover_to: str | None = None  # a switchover asked of us, the writer ("": any reader)
    handover: Handover | None = None  # the last writer handed over at seqno handover.gtid
    handover_wait: float = 0.0  # seconds more that nodes but its target leave the lock to it
    promised_for: float = 0.0  # G9: we confirmed the writer's failsafe lease for this long
    disk_full: str = ""  # G10: why our data volume counts as full ("" = it has room)
    roomy_readers: tuple[str, ...] = ()  # G10, on the writer: readers whose volume has room
    paused: str = ""  # maintenance mode (`autopilot-mysql pause`): who and why ("" = off)
    nofailover: bool = False  # this node's NOFAILOVER tag: never the writer
    last_writer: str | None = None  # the last node seen holding the writer lock


def failsafe_members(passing: set[str], component: tuple[str, ...],
                     addresses: dict[str, str], own: str) -> set[str]:
    """G9: who must confirm the writer's failsafe lease. `passing`: the members Consul listed
    as passing when it last answered; `component`: wsrep_incoming_addresses (host:port) of our
    Primary Component now, named by `addresses` (node -> host); `own`: our host. A member
    of the component we cannot name counts as one that does not confirm."""
    names = {a: n for n, a in addresses.items()}
    hosts = {a.rsplit(":", 1)[0] for a in component} - {own}
    return passing | {names.get(h, f"the member at {h}") for h in hosts}


def _wait(reason: str, role: Role = Role.UNKNOWN, healthy: bool = False) -> Decision:
    return Decision(Action.WAIT, reason, role=role, healthy=healthy)


def decide(o: GaleraObservation) -> Decision:
    """One cycle's decision for a Galera node; one ordered chain, each branch one reason."""
    if o.stopping:
        return Decision(Action.SHUTDOWN, "stop requested: shutting down cleanly")
    if o.mysqld == ProcState.FAILED:
        return _wait("mysqld failed too often; it stays down until the supervisor restarts")
    if o.mysqld == ProcState.BACKOFF and o.paused:
        return _wait(f"maintenance mode ({o.paused}): mysqld exited and is not started again "
                     "while the cluster is paused; `autopilot-mysql resume` starts it")
    if o.mysqld == ProcState.BACKOFF and o.mysqld_restart_in > 0:
        return _wait(f"mysqld exited: starting it again in {o.mysqld_restart_in:.0f}s")
    if o.mysqld in (ProcState.STOPPED, ProcState.BACKOFF):
        return _down(o)
    if not o.mysql_alive and o.non_primary_for > 0:
        # G7 for a joiner: mysqld's log says its last view is not a Primary Component, or no
        # other member serves in one (its donor, or the whole component, went away during its
        # state transfer).
        if o.dcs_ok and not o.component_exists and not o.component_listed \
                and o.non_primary_for >= NON_PRIMARY_GRACE:
            return Decision(Action.LEAVE, f"mysqld is still joining, but no Primary Component "
                            f"is left for it to join (for {o.non_primary_for:.0f}s no member "
                            "serves in one): its state transfer cannot finish. Stopping mysqld "
                            "to take part in the census (G7)")
        return _wait(f"mysqld is joining, but no Primary Component is in sight (for "
                     f"{o.non_primary_for:.0f}s): waiting for one (Galera reconnects on its "
                     f"own); after {NON_PRIMARY_GRACE:.0f}s with no member serving in one it "
                     "is stopped and takes part in the census")
    if not o.mysql_alive:
        return _wait("mysqld is starting (a state transfer or InnoDB recovery may take a while; "
                     "nothing kills it meanwhile)")
    if not o.registered:
        return Decision(Action.REGISTER, "registering the service and its health check")
    if o.primary and o.synced and o.dcs_ok and o.record is None:
        return Decision(Action.PUBLISH_POSITION, "in a Primary Component, and Consul holds no "
                        "record of the cluster (its data lost, or the key deleted): recording "
                        "it again from this node, our position the least any later bootstrap "
                        "may start from (G12)")
    if o.primary and o.dcs_ok and (o.published is None or o.published.state != UP):
        return Decision(Action.PUBLISH_POSITION, "in a Primary Component: telling the census "
                        "this node is up")
    if not o.primary:
        if o.read_only is False:
            return Decision(Action.FENCE, "not in a Primary Component but writable: fencing")
        if o.leader == o.node:
            return Decision(Action.RELEASE, "not in a Primary Component: giving up the writer "
                            "role")
        if o.evicted:
            return Decision(Action.LEAVE, "this node was evicted from the cluster (mysqld's "
                            "log: its group layer must restart; a peer took it for dead): "
                            "stopping mysqld cleanly, it joins again by IST (G11)")
        if o.dcs_ok and not o.component_exists and not o.component_listed \
                and o.non_primary_for >= NON_PRIMARY_GRACE:
            return Decision(Action.LEAVE, f"outside any Primary Component for "
                            f"{o.non_primary_for:.0f}s and no member serves in one: stopping "
                            "mysqld cleanly to take part in the census (G7)")
        return _wait("not in a Primary Component (a partition, or the cluster lost its "
                     "quorum): serving nothing until it rejoins one; Galera reconnects on its "
                     "own")
    if not o.synced:
        if o.read_only is False:
            return Decision(Action.FENCE, f"{o.state_comment}, not Synced, but writable: "
                            "fencing")
        if o.leader == o.node:
            return Decision(Action.RELEASE, f"{o.state_comment}, not Synced: giving up the "
                            "writer role")
        return _wait(f"in the Primary Component, {o.state_comment}: serving once Synced")
    if o.leader == o.node:
        if o.lease_left <= 0:
            return Decision(Action.FENCE, "our writer lease ran out (Consul did not confirm "
                            "our session in time): fencing", role=Role.PRIMARY)
        if o.read_only is not False:
            if o.handover is not None and _seqno(o.handover) > o.last_committed:
                return _wait(f"writer after a switchover: committing write-sets up to seqno "
                             f"{_seqno(o.handover)} (where {o.handover.from_node} handed over; "
                             f"at {o.last_committed}) before opening", Role.PRIMARY, True)
            if o.open_in > 0:
                return _wait(f"writer: opening for writes in {o.open_in:.1f}s, once the "
                             "previous writer's lease surely ran out", Role.PRIMARY, True)
            return Decision(Action.PROMOTE, "this node holds the writer lock: opening for "
                            "writes", role=Role.PRIMARY, healthy=True)
        if o.switchover_to is not None:
            return _switchover(o)
        if o.disk_full:
            if o.roomy_readers:
                return Decision(Action.HAND_OVER, f"{o.disk_full}: handing the writer role over "
                                f"to a reader with room ({', '.join(o.roomy_readers)}) (G10)",
                                role=Role.REPLICA, healthy=True)
            return Decision(Action.STAY_PRIMARY, f"{o.disk_full}, and no Synced reader has "
                            "room either: writes wait for space. Free space on a data volume "
                            "(or grow it); nothing is lost meanwhile", role=Role.PRIMARY,
                            healthy=True)
        return Decision(Action.STAY_PRIMARY, "the writer: Synced in the Primary Component, "
                        "holding the lock", role=Role.PRIMARY, healthy=True)
    if o.read_only is False:
        return Decision(Action.FENCE, f"{o.leader or 'nobody'} holds the writer lock but this "
                        "node is writable: fencing", role=Role.REPLICA, healthy=True)
    if o.disk_full:
        return Decision(Action.LEAVE, f"{o.disk_full}: leaving the Primary Component cleanly "
                        "(a reader that cannot apply would stall every commit of the cluster); "
                        "it joins again by IST once it has room (G10)")
    if not o.dcs_ok:
        return _wait("Synced, Consul unreachable: serving reads", Role.REPLICA, True)
    if o.session is None:
        if not o.check_passing:
            return _wait("Synced, serving reads; the writer election takes nodes whose Consul "
                         "check passes", Role.REPLICA, True)
        return Decision(Action.CREATE_SESSION, "Synced: creating a session to take part in "
                        "the writer election", role=Role.REPLICA, healthy=True)
    if o.promised_for > 0 and (o.leader is None or not o.writer_in_component):
        return _wait(f"this node confirmed the writer's failsafe lease while Consul was down: "
                     f"not taking the writer lock for {o.promised_for:.1f}s more", Role.REPLICA,
                     True)
    if o.leader is None and o.nofailover:
        return _wait("Synced, serving reads; the writer lock is free, but this node is tagged "
                     "NOFAILOVER: it never takes it", Role.REPLICA, True)
    if o.leader is None:
        h = o.handover
        if h is not None and o.handover_wait > 0 and (h.from_node == o.node
                                                      or h.to not in ("", o.node)):
            whom = f"to {h.to}" if h.to else "to a Synced reader"
            return _wait(f"{'this node' if h.from_node == o.node else h.from_node} handed the "
                         f"writer role over {whom} (switchover): leaving the lock to it for "
                         f"{o.handover_wait:.1f}s more", Role.REPLICA, True)
        if o.paused and o.last_writer not in (None, o.node) \
                and (h is None or h.to != o.node):
            return _wait(f"the writer lock is free, and maintenance mode is on ({o.paused}): "
                         f"no automatic change of writer; only {o.last_writer}, the last "
                         "writer, may take it back (`autopilot-mysql resume` lets any Synced "
                         "reader take it)", Role.REPLICA, True)
        return Decision(Action.ACQUIRE_LOCK, "Synced and the writer lock is free: taking it",
                        role=Role.REPLICA, healthy=True)
    if not o.writer_in_component:
        return Decision(Action.DEPOSE, f"the writer {o.leader} is not in our Primary "
                        "Component (it cannot commit): ending its session so that a Synced "
                        "node takes over", role=Role.REPLICA, healthy=True)
    return Decision(Action.STAY_REPLICA, f"Synced, serving reads; {o.leader} writes",
                    role=Role.REPLICA, healthy=True)


def _seqno(h: Handover) -> int:
    try:
        return int(h.gtid)
    except ValueError:
        return -1  # not a Galera handover: nothing to wait for


def _switchover(o: GaleraObservation) -> Decision:
    """G8, on the writer: hand over, or say why not."""
    to = o.switchover_to
    if to and to not in o.readers:
        return Decision(Action.REJECT_SWITCHOVER, f"switchover to {to} refused: it is not a "
                        f"Synced reader whose check passes (readers: "
                        f"{', '.join(o.readers) or 'none'})", role=Role.PRIMARY, healthy=True)
    if not o.readers:
        return Decision(Action.REJECT_SWITCHOVER, "switchover refused: no Synced reader to "
                        "hand the writer role to", role=Role.PRIMARY, healthy=True)
    return Decision(Action.HAND_OVER, f"switchover requested: fencing, then handing the writer "
                    f"role to {to or 'a Synced reader'} at our last committed seqno (G8)",
                    role=Role.REPLICA, healthy=True)


def _down(o: GaleraObservation) -> Decision:
    """mysqld is not running: find out what our data holds, tell the census, then join a
    Primary Component, or bootstrap one (G1-G5), or wait and say for what."""
    if o.local is None:
        return Decision(Action.RECOVER, "mysqld is down: reading this node's Galera position "
                        "(grastate.dat, else mariadbd --wsrep-recover)")
    if not o.dcs_ok:
        return _wait(f"mysqld is down at {o.local.position}, Consul unreachable: a Galera "
                     "node starts only knowing whether to join or bootstrap")
    if not _same(o.published, o.local):
        return Decision(Action.PUBLISH_POSITION, f"publishing our state for the census: down "
                        f"at {o.local.position}")
    if o.component_exists:
        if o.disk_full:
            return _wait(f"{o.disk_full}: not joining the Primary Component until the volume "
                         "has room (free space on it, or grow it) (G10)")
        if o.joining not in (None, o.node):
            return _wait(f"{o.joining} is joining the Primary Component: joining after it "
                         "(one state transfer at a time)")
        return Decision(Action.JOIN, "a Primary Component exists: joining it (IST when its "
                        "write-set cache still covers our position, else a full state "
                        "transfer)")
    if o.forced == o.node:
        return Decision(Action.BOOTSTRAP, "an operator forced a bootstrap from this node")
    if o.record is None:
        held = sorted({d.uuid for d in [o.local, *o.census.values()]
                       if d.data == DATA and d.uuid})
        if held:
            # G12: data of a cluster, and no record of it: Consul lost its data, or the key
            # was deleted. Never a second cluster beside members that may still run it.
            choice = choose_bootstrap(None, o.known, o.census)
            who = "this node" if o.local.data == DATA else "a member"
            return _wait(
                f"Consul holds no record of a Galera cluster, but {who} holds data of "
                f"{', '.join(held)} (Consul lost its data, or service/<name>/galera/cluster "
                "was deleted): not bootstrapping a second cluster beside members that may "
                "still run it. Joining as soon as a member serves in a Primary Component (it "
                "records the cluster again). If every member is down: `autopilot-mysql galera "
                "bootstrap` shows the census (it says: "
                f"{choice.node or 'nobody'}, {choice.reason}); "
                "`--node NAME --force` bootstraps NAME (G12)")
        return Decision(Action.BOOTSTRAP, "no Galera cluster recorded in Consul and no member "
                        "holds data of one: claiming its first bootstrap")
    if not o.record.uuid:
        # A first bootstrap that did not get as far as recording the cluster's UUID.
        if o.record.by == o.node:
            return Decision(Action.BOOTSTRAP, "this node claimed the cluster's first bootstrap "
                            "and did not finish it: bootstrapping again")
        theirs = o.census.get(o.record.by)
        if theirs is None or theirs.state != DOWN:
            return _wait(f"{o.record.by} bootstraps the new cluster: joining once it is "
                         "Primary")
        choice = choose_bootstrap(None, o.known, o.census)
        if choice.node != o.node:
            return _wait(f"{o.record.by} claimed the first bootstrap and is down; "
                         f"{choice.reason}")
        return Decision(Action.BOOTSTRAP, f"{o.record.by} claimed the first bootstrap and is "
                        f"down; {choice.reason}: bootstrapping from it")
    if o.paused:
        return _wait(f"no Primary Component, and maintenance mode is on ({o.paused}): no "
                     "automatic bootstrap. `autopilot-mysql galera bootstrap` shows the census "
                     "(--node NAME --force bootstraps one), `autopilot-mysql resume` lets the "
                     "census decide")
    choice = choose_bootstrap(o.record, o.known, o.census)
    if choice.node is None:
        return _wait(f"no Primary Component: {choice.reason}")
    if choice.node != o.node:
        return _wait(f"no Primary Component: {choice.node} bootstraps ({choice.reason}); "
                     "joining it once it is Primary")
    return Decision(Action.BOOTSTRAP, f"no Primary Component, and the census is complete: "
                    f"{choice.reason}: bootstrapping from it")


def _same(published: CensusDoc | None, local: CensusDoc) -> bool:
    return published is not None and (published.state, published.uuid, published.seqno,
                                       published.data) == (DOWN, local.uuid, local.seqno,
                                                           local.data)


def evictee(host: str, lost: int, members: tuple[tuple[str, str, str], ...], own_uuid: str,
            primary: bool, evicted: frozenset[str] = frozenset()) -> tuple[str, str] | None:
    """G11: whom to evict now that the Galera port on `host` refused connections twice:
    (gcomm UUID, node name), or None. `lost`: how many peers mysqld said it lost at once;
    `members`: our component's view (uuid, incoming address host:port, node name), as
    mysql.wsrep_cluster_members says; `evicted`: our eviction list (members of the view in it
    are on their way out and count as gone)."""
    leaving = sum(1 for u, _, _ in members if u in evicted)
    if not primary or lost != 1 or 2 * (len(members) - leaving - 1) <= len(members):
        return None
    there = [(u, name) for u, addr, name in members if addr.rsplit(":", 1)[0] == host]
    if len(there) != 1 or there[0][0] == own_uuid or there[0][0] in evicted:
        return None  # not in our view any more, ambiguous, ourselves, or on its way out
    return there[0]
