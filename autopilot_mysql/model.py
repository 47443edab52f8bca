"""Plain values shared by every layer: roles, process states, members, what one HA cycle
observed, and the typed decision it made. No behaviour beyond small derived properties."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


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
    def role(self) -> Role:
        for r in (Role.PRIMARY, Role.REPLICA):
            if r.value in self.tags:
                return r
        return Role.UNKNOWN


@dataclass(frozen=True)
class Replication:
    """This server's replication threads, as SHOW SLAVE STATUS reports them."""

    master_host: str
    io_running: bool  # Slave_IO_Running = Yes
    sql_running: bool
    seconds_behind: int | None
    io_connecting: bool = False  # Slave_IO_Running = Connecting (retrying, not stopped)
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


# MariaDB's IO-thread error when the replica asks for a GTID the primary's binlog lacks.
ER_MASTER_FATAL_READING_BINLOG = 1236


@dataclass(frozen=True)
class Observation:
    """Everything one HA cycle looked at, gathered before deciding. Pure data: `ha.decide`
    maps it to a Decision without any I/O, so tests can replay any history."""

    node: str
    stopping: bool = False
    observed_at: float = 0.0  # monotonic time this observation started
    lock_valid_until: float = 0.0  # monotonic: our session renewal + FENCE_AFTER (0: no session)
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
    session_age: float = 0.0  # seconds since the session was last renewed successfully
    session_ttl: float = 10.0
    leader: str | None = None  # node name holding the leader key (None: free or unknown)
    leader_address: str | None = None
    gtid: str = ""  # what this node holds: applied, plus received into its relay log
    relay_pending: bool = False  # received transactions are not all applied yet
    replica: Replication | None = None  # None: no replication configured
    errant: tuple[str, ...] = ()  # transactions the primary never had (found earlier)
    # Election (leader key free): replication stopped and relay log applied; the position we
    # published; positions others published; who else should publish; how long we waited.
    drained: bool = False
    published: str | None = None
    positions: tuple[tuple[str, str], ...] = ()
    voters: tuple[str, ...] = ()  # passing members but us and the last leader
    healthy_members: tuple[str, ...] = ()  # passing members but us
    async_primary: str | None = None  # a primary that acknowledged commits asynchronously
    election_age: float = 0.0
    election_timeout: float = 4.0
    promote_in: float = 0.0  # we hold the lock: seconds until the old primary surely fenced
    switchover_to: str | None = None  # a switchover was requested ("" = to the best replica)
    handover_to: str | None = None  # the old primary handed over (fenced) to this node
    handing_over: bool = False  # we fenced and released the lock for a switchover
    fence_after: float = 3.0  # a primary fences when its session was not renewed for this long


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
    DRAIN = "drain"  # primary lost: stop fetching, apply the relay log before the election
    PUBLISH_POSITION = "publish_position"
    STAY_PRIMARY = "stay_primary"
    HAND_OVER = "hand_over"  # switchover: fence, record our position, release the lock
    REJECT_SWITCHOVER = "reject_switchover"
    SHUTDOWN = "shutdown"


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
    mysqld: ProcState = ProcState.STOPPED
    gtid_current_pos: str = ""
    server_id: int | None = None
    version: str = ""
    leader: str | None = None
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
    extra: dict[str, str] = field(default_factory=dict)
