"""Plain values shared by every layer: roles, process states, members, what one HA cycle
observed, and the typed decision it made. No behaviour beyond small derived properties."""
# Layer 0 (STYLE.md): imports the other layer-0 modules only.

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .election import Handover, Published, SyncState


class Role(StrEnum):
    """What this node is in the cluster. Consul tags and HTTP paths derive from it."""

    PRIMARY = "primary"  # holds the leader lock and is writable
    REPLICA = "replica"  # another node holds the lock; this one stays read-only
    UNKNOWN = "unknown"  # no lock seen yet (starting, Consul unreachable, mysqld down)


class ProcState(StrEnum):
    """Life cycle of a managed child (mysqld, the local Consul agent)."""

    STOPPED = "stopped"  # not started yet, or stopped on purpose
    RUNNING = "running"
    BACKOFF = "backoff"  # exited unexpectedly; will be restarted after a delay
    FAILED = "failed"  # exited too often within the window; stays down
    STOPPING = "stopping"


@dataclass(frozen=True)
class Member:
    """One node of the service as Consul's health endpoint reports it."""

    node: str
    address: str
    port: int
    service_id: str
    passing: bool
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()

    @property
    def nofailover(self) -> bool:
        """The node's NOFAILOVER tag (its service meta): never elected."""
        return dict(self.meta).get("tag_nofailover") == "true"

    @property
    def role(self) -> Role:
        for r in (Role.PRIMARY, Role.REPLICA):
            if r.value in self.tags:
                return r
        return Role.UNKNOWN


def copy_sources(members: Sequence[Member], me: str, leader: str | None
                 ) -> list[tuple[str, str]]:
    """Nodes a new or rebuilt node may copy its data from (backup/clone.py), best first: the
    healthy replicas, then the primary (a copy loads it)."""
    replicas = [(m.node, m.address) for m in members
                if m.passing and m.node not in (me, leader) and m.role == Role.REPLICA]
    primary = [(m.node, m.address) for m in members if m.node == leader and m.passing]
    return replicas + primary


@dataclass(frozen=True)
class Replication:
    """This server's replication threads, as SHOW SLAVE STATUS reports them."""

    master_host: str
    io_running: bool  # Slave_IO_Running = Yes
    sql_running: bool
    seconds_behind: int | None
    io_connecting: bool = False  # Slave_IO_Running = Connecting or Preparing (not stopped)
    last_io_errno: int = 0
    last_io_error: str = ""
    last_sql_errno: int = 0
    last_sql_error: str = ""
    gtid_io_pos: str = ""
    master_log_file: str = ""  # the primary's binary log the IO thread reads

    @property
    def running(self) -> bool:
        return self.io_running and self.sql_running

    @property
    def error(self) -> str:
        return "; ".join(e for e in (self.last_io_error, self.last_sql_error) if e)


# MariaDB's IO-thread error when the primary cannot serve the replica's GTID position: either
# the replica holds transactions the primary never had (errant), or the primary purged the
# binary logs the replica still needs (behind).
ER_MASTER_FATAL_READING_BINLOG = 1236


@dataclass(frozen=True)
class Observation:
    """Everything one HA cycle looked at, gathered before deciding. Pure data: `ha.decide`
    maps it to a Decision without any I/O, so tests can replay any history."""

    node: str
    stopping: bool = False
    observed_at: float = 0.0  # monotonic time this observation started
    lock_valid_until: float = 0.0  # monotonic: our lease (election.I1); 0: we hold none
    lease_left: float = 0.0  # lock_valid_until - observed_at (<= 0: expired or none)
    mysqld: ProcState = ProcState.STOPPED
    mysqld_restart_in: float = 0.0  # seconds until the next restart when BACKOFF
    mysqld_last_error: str = ""
    mysql_alive: bool = False  # mysqld answered a query in this cycle
    read_only: bool | None = None  # None when mysqld did not answer
    dcs_ok: bool = False  # Consul answered in this cycle
    dcs_unreachable_for: float = 0.0  # seconds since Consul last answered
    registered: bool = False  # our service is in the agent's catalog
    check_passing: bool = False  # Consul's HTTP check of our /health passes
    session: str | None = None  # our Consul session, None when we have none
    leader: str | None = None  # node name holding the leader key (None: free or unknown)
    leader_address: str | None = None
    leader_unreadable: bool = False  # the key is held, but its value cannot be read
    leader_silent_for: float = 0.0  # seconds the leader's heartbeat has not changed (our clock)
    leader_lease: float = 0.0  # the lease the leader's heartbeats carry
    leader_says: str = ""  # its own /status while silent: "fenced", "writable", "unreachable"
    gtid: str = ""  # what this node holds: applied, plus received into its relay log
    data_id: str = ""  # this node's data id (election: a member is a node *with* its data)
    relay_pending: bool = False  # received transactions are not all applied yet
    apply_stalled: str = ""  # why applying the relay log makes no progress ("" = it does)
    replica: Replication | None = None  # None: no replication configured
    semi_sync_replica: bool = False  # our IO thread acknowledges (Rpl_semi_sync_slave_status)
    in_ack_set: bool = False  # we are in the current primary's acknowledgement set
    ack_set_pending: float = 0.0  # seconds to wait for a new primary's set before following
    identity_pending: str = ""  # we need a fresh server_id before replicating (and why)
    errant: tuple[str, ...] = ()  # transactions the primary never had (found earlier)
    behind: str = ""  # the primary purged binary logs we still need (found earlier)
    refused: str = ""  # this cycle: the primary refuses our position: "errant" or "behind"
    refusal_confirmed: bool = False  # the refusing node proved its lock after refusing
    # Election (leader key free): replication stopped and relay log applied; the position we
    # published; everyone's published positions; the acknowledgement set; healthy voters.
    drained: bool = False
    relay_kept: bool = False  # mysqld restarted with replication stopped, and we are a member
    #                           of the recorded acknowledgement set: our relay log may hold
    #                           acknowledged commits, which START SLAVE would discard
    published: str | None = None
    published_term: int = 0  # the election term it was published for (election.I5)
    published_primary: bool = False  # it was published as the last primary (election.I5)
    positions: tuple[Published, ...] = ()  # others' published positions
    sync: SyncState | None = None
    voters: tuple[str, ...] = ()  # passing members but us and the last leader
    healthy_members: tuple[str, ...] = ()  # passing members but us
    election_age: float = 0.0
    voter_timeout: float = 4.0
    forced: str | None = None  # an operator forced this candidate (election.I7)
    paused: str = ""  # maintenance mode (`autopilot-mysql pause`): who and why ("" = off)
    nofailover: bool = False  # this node's NOFAILOVER tag: never a candidate
    required: bool = False  # our position may hold acknowledged commits (election.required)
    promised_for: float = 0.0  # seconds we still promised (failsafe) not to take part
    promised_to: str = ""  # the primary we promised it to
    promote_in: float = 0.0  # we hold the lock: seconds until the old primary's lease ran out
    switchover_to: str | None = None  # a switchover was requested ("" = to the best replica)
    handover: Handover | None = None  # the old primary handed over to this election
    takeover_tried: bool = False  # we tried to take this handover over already (election.I10)
    handing_over: bool = False  # we fenced and released the lock for a switchover
    handover_age: float = 0.0  # seconds since we handed over
    handover_timeout: float = 10.0
    lease: float = 2.0  # a primary fences when its lease is not renewed for this long
    disk_full: str = ""  # why our data volume counts as full ("" = it has room)
    roomy_members: tuple[str, ...] = ()  # healthy members whose volume has room


class Action(StrEnum):
    """What the cycle decided. The daemon has one handler per action."""

    WAIT = "wait"  # nothing to do but wait (starting, backing off, failed)
    RESTART_MYSQLD = "restart_mysqld"
    REGISTER = "register"  # (re-)register the service and its check in Consul
    CREATE_SESSION = "create_session"
    ACQUIRE_LOCK = "acquire_lock"
    PROMOTE = "promote"  # holds the lock: open for writes (read_only off)
    FENCE = "fence"  # must not accept writes: read_only on, drop client connections
    FOLLOW = "follow"  # another node is primary: (re)point replication at it
    STAY_REPLICA = "stay_replica"
    MARK_ERRANT = "mark_errant"  # we hold transactions the primary never had: stop, report
    MARK_BEHIND = "mark_behind"  # the primary purged what we need: stop, report, re-provision
    DRAIN = "drain"  # primary lost: stop fetching, apply the relay log before the election
    RECOVER_RELAY = "recover_relay"  # apply what a restarted replica's relay log kept
    PUBLISH_POSITION = "publish_position"
    STAY_PRIMARY = "stay_primary"
    HAND_OVER = "hand_over"  # switchover: fence, record our position, release the lock
    TAKE_OVER = "take_over"  # a switchover's target: take the handed-over lock and open
    DEPOSE = "depose"  # the primary lost Consul and fenced itself: end its session (election)
    ABORT_HANDOVER = "abort_handover"  # nobody took the lock we handed over: take part again
    RELEASE = "release"  # we hold the lock but cannot open (stuck apply): give it up
    REJECT_SWITCHOVER = "reject_switchover"
    SHUTDOWN = "shutdown"
    # TOPOLOGY=galera (galera.py)
    RECOVER = "recover_position"  # mysqld is down: read our Galera position (grastate, recover)
    JOIN = "join"  # start mysqld joining the Primary Component (IST or SST)
    BOOTSTRAP = "bootstrap"  # start mysqld forming a new Primary Component (galera.G1-G5)
    LEAVE = "leave"  # no quorum anywhere: stop mysqld cleanly for the census (galera.G7)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str  # one sentence for the operator: what and why
    role: Role = Role.UNKNOWN
    healthy: bool = False  # may Consul/HAProxy send traffic to this node at all

    def __str__(self) -> str:
        return f"{self.action.value}: {self.reason}"


@dataclass(frozen=True)
class NodeStatus:
    """The snapshot the HTTP API serves; replaced whole after every cycle (never mutated)."""

    node: str
    role: Role = Role.UNKNOWN
    state: str = "starting"
    healthy: bool = False
    writable: bool = False
    replicating: bool = False  # both replication threads run
    lag: int | None = None  # Seconds_Behind_Master when replicating
    errant: tuple[str, ...] = ()
    behind: str = ""  # the primary purged binary logs this node needs
    mysqld: ProcState = ProcState.STOPPED
    gtid_current_pos: str = ""
    data_id: str = ""
    ack_set: dict[str, object] = field(default_factory=dict)
    disk_free: int | None = None  # bytes free on the data volume
    disk_full: str = ""  # why it counts as full ("" = it has room)
    server_id: int | None = None
    version: str = ""
    leader: str | None = None
    consul_ok: bool = False  # Consul answered in the last cycle
    members: tuple[Member, ...] = ()
    last_decision: str = ""
    last_error: str = ""
    # Monotonic time of the *observation* behind this snapshot (not of its publication: a
    # cycle paused midway, SIGSTOP, must not publish pre-pause facts as fresh).
    cycle_at: float = 0.0
    # Until when (monotonic) the leader lock is surely ours: the last successful session
    # renewal + FENCE_AFTER. /primary checks it at answer time, not at snapshot time.
    lock_valid_until: float = 0.0
    started_at: float = 0.0
    paused: str = ""  # maintenance mode: who paused the cluster, when, why ("" = off)
    tags: tuple[str, ...] = ()  # nofailover, noloadbalance
    mysqld_exits: int = 0  # unexpected exits of mysqld since the supervisor started
    consul_unreachable_for: float = 0.0  # seconds since Consul last answered (0: it does)
    extra: dict[str, str] = field(default_factory=dict)
