"""The decisions: a pure function from what one cycle observed to what to do, and why.

One ordered chain of checks (as Patroni's `_run_cycle`); the first that applies wins and ends
in a one-sentence reason. No I/O here: the daemon observes, calls `decide`, logs the decision
in one line and runs the matching handler. Unit tests replay histories against it.

Fencing rule (no two writable primaries). A primary renews its Consul session every cycle and
fences itself (read_only on, client connections dropped) as soon as a renewal fails with "no
such session", or when no renewal has succeeded for FENCE_AFTER seconds. So after its session
is invalidated at time T (by TTL, its node's serfHealth or its service check), an old primary
whose loop runs is read-only by T + FENCE_AFTER + LOOP_WAIT at the latest. A new primary opens
for writes only FENCE_AFTER + LOOP_WAIT + 0.5 s after it saw the leader key free (which is
after T): `promote_in` counts that down. config enforces FENCE_AFTER < SESSION_TTL so the
session cannot expire on its own before the primary has fenced. A primary whose loop does not
run (paused) cannot fence, so its commits are held by semi-synchronous replication: with no
replica acknowledging, they wait and are dropped by the fence when it resumes.

Election. When the leader key is free, every healthy node stops fetching from the lost primary,
applies its relay log, and publishes its GTID position in Consul (a key tied to its session).
When every passing member has published (or after the election timeout), the node whose
position covers all others (`gtid.best_candidate`) takes the lock; the others wait and then
replicate from it. No node but the last primary itself takes part while the `async` key
names that primary: it was acknowledging commits without a synchronous replica, so only it is
sure to have them (Patroni's rule: promote only a synchronous standby).
"""

from __future__ import annotations

from . import gtid
from .model import (
    ER_MASTER_FATAL_READING_BINLOG,
    Action,
    Decision,
    Observation,
    ProcState,
    Role,
)


def decide(o: Observation) -> Decision:
    if o.stopping:
        return Decision(Action.SHUTDOWN, "stop requested: fencing, leaving Consul, stopping "
                        "mysqld")

    writable = o.read_only is False
    # --- mysqld itself ----------------------------------------------------------------------
    if o.mysqld == ProcState.FAILED:
        return Decision(Action.WAIT, f"mysqld stays down: {o.mysqld_last_error}")
    if o.mysqld == ProcState.BACKOFF:
        if o.mysqld_restart_in <= 0:
            return Decision(Action.RESTART_MYSQLD, f"restarting mysqld after: "
                            f"{o.mysqld_last_error}")
        return Decision(Action.WAIT, f"mysqld will be restarted in {o.mysqld_restart_in:.1f}s "
                        f"after: {o.mysqld_last_error}")
    if o.mysqld != ProcState.RUNNING:
        return Decision(Action.WAIT, f"mysqld is {o.mysqld.value}")
    if not o.mysql_alive:
        return Decision(Action.WAIT, "mysqld is running but does not answer queries yet")

    # --- Consul -----------------------------------------------------------------------------
    if not o.dcs_ok:
        if writable and o.session_age >= o.fence_after:
            return Decision(Action.FENCE, f"Consul unreachable for {o.dcs_unreachable_for:.1f}s "
                            f"and the lock was last renewed {o.session_age:.1f}s ago (limit "
                            f"{o.fence_after:.1f}s): fencing before it can pass to another node",
                            healthy=True)
        if writable:
            return Decision(Action.STAY_PRIMARY, f"Consul unreachable for "
                            f"{o.dcs_unreachable_for:.1f}s; lock renewed {o.session_age:.1f}s "
                            f"ago, fencing at {o.fence_after:.1f}s", role=Role.PRIMARY,
                            healthy=True)
        return Decision(Action.WAIT, f"Consul unreachable for {o.dcs_unreachable_for:.1f}s: "
                        "staying read-only until it answers", healthy=True)

    if not o.registered:
        if writable:
            return Decision(Action.FENCE, "our service is not registered in Consul while we "
                            "are writable: fencing first", healthy=True)
        return Decision(Action.REGISTER, "registering the service and its health check in "
                        "Consul", healthy=True)

    if o.leader is not None and o.leader != o.node:
        return _replica(o, writable)
    if o.session is None:
        if writable:
            return Decision(Action.FENCE, "we have no Consul session but are writable: fencing",
                            healthy=True)
        if not o.check_passing:
            return Decision(Action.WAIT, "waiting for Consul's health check of this node to "
                            "pass before joining the election", healthy=True)
        return Decision(Action.CREATE_SESSION, "creating a Consul session to take part in "
                        "the election", healthy=True)
    if o.leader is None:
        return _election(o, writable)
    return _primary(o, writable)


def _replica(o: Observation, writable: bool) -> Decision:
    leader = f"{o.leader} ({o.leader_address})"
    if writable:
        return Decision(Action.FENCE, f"{leader} holds the leader lock but this node is "
                        "writable: fencing", role=Role.REPLICA, healthy=True)
    if o.errant:
        return Decision(Action.WAIT, f"this node holds transactions the primary {o.leader} "
                        f"never had: {', '.join(o.errant)}. It neither replicates nor serves; "
                        "re-provision it (empty its data directory and restart it)",
                        role=Role.REPLICA)
    r = o.replica
    if r is not None and r.last_io_errno == ER_MASTER_FATAL_READING_BINLOG:
        return Decision(Action.MARK_ERRANT, f"{leader} refuses our GTID position {o.gtid}: "
                        f"{r.last_io_error}", role=Role.REPLICA)
    if r is None or r.master_host != o.leader_address:
        return Decision(Action.FOLLOW, f"{leader} is the primary: replicating from it by GTID "
                        f"from {o.gtid or 'the beginning'}", role=Role.REPLICA, healthy=True)
    if r.io_connecting and r.sql_running:
        return Decision(Action.STAY_REPLICA, f"connecting to {leader} (retrying every second"
                        f"{': ' + r.last_io_error if r.last_io_error else ''})",
                        role=Role.REPLICA, healthy=True)
    if not r.running:
        return Decision(Action.FOLLOW, f"replication from {leader} stopped (IO "
                        f"{'running' if r.io_running else 'stopped'}, SQL "
                        f"{'running' if r.sql_running else 'stopped'}"
                        f"{': ' + r.error if r.error else ''}): restarting it",
                        role=Role.REPLICA, healthy=True)
    lag = "?" if r.seconds_behind is None else f"{r.seconds_behind}s"
    return Decision(Action.STAY_REPLICA, f"replicating from {leader}, {lag} behind",
                    role=Role.REPLICA, healthy=True)


def _election(o: Observation, writable: bool) -> Decision:
    if writable:
        return Decision(Action.FENCE, "the leader key is free but this node is writable: "
                        "fencing", healthy=True)
    if o.handing_over:
        return Decision(Action.WAIT, f"handed the primary role over"
                        f"{' to ' + o.handover_to if o.handover_to else ''}: waiting for the "
                        "new primary", healthy=True)
    if o.async_primary and o.async_primary != o.node:
        return Decision(Action.WAIT, f"no primary, and the last one, {o.async_primary}, was "
                        "acknowledging commits without a synchronous replica: they may exist "
                        f"only on it, so no node takes over on its own. Bring "
                        f"{o.async_primary} back, or accept losing them: delete the Consul "
                        "key service/<SERVICE_NAME>/async", healthy=True)
    if o.errant:
        return Decision(Action.WAIT, f"no primary, and this node holds errant transactions "
                        f"({', '.join(o.errant)}): it may not take part", role=Role.UNKNOWN)
    if o.replica is not None and not o.drained:
        return Decision(Action.DRAIN, "the primary is gone: stopping replication and applying "
                        "the relay log before the election", healthy=True)
    if o.published != o.gtid:
        return Decision(Action.PUBLISH_POSITION, f"publishing our position "
                        f"{o.gtid or '(empty)'} for the election", healthy=True)
    positions: dict[str, gtid.Position] = {}
    for node, text in (*o.positions, (o.node, o.gtid)):
        try:
            positions[node] = gtid.parse(text)
        except ValueError:
            continue  # a position we cannot read is no candidate
    missing = [v for v in o.voters if v not in positions]
    if missing and o.election_age < o.election_timeout:
        return Decision(Action.WAIT, f"waiting up to {o.election_timeout - o.election_age:.1f}s "
                        f"for the positions of {', '.join(missing)}", healthy=True)
    best = gtid.best_candidate(positions, preferred=o.handover_to or None)
    if best is None:
        return Decision(Action.WAIT, "no readable position to compare", healthy=True)
    if best != o.node:
        return Decision(Action.WAIT, f"{best} is at least as far ahead "
                        f"({gtid.render(positions[best]) or 'empty'}) as this node "
                        f"({o.gtid or 'empty'}): leaving the lock to it", healthy=True)
    others = ", ".join(f"{n} {gtid.render(p) or 'empty'}" for n, p in sorted(positions.items())
                       if n != o.node) or "no other candidate"
    return Decision(Action.ACQUIRE_LOCK, f"this node is the most advanced ({o.gtid or 'empty'}; "
                    f"{others}): taking the leader lock", healthy=True)


def _primary(o: Observation, writable: bool) -> Decision:
    if o.session_age >= o.fence_after:
        return Decision(Action.FENCE, f"our session was last renewed {o.session_age:.1f}s ago "
                        f"(limit {o.fence_after:.1f}s): fencing before the lock can pass on",
                        healthy=True)
    if not writable:
        if o.replica is not None and not o.drained:
            return Decision(Action.DRAIN, "holding the lock: applying the relay log before "
                            "opening for writes", role=Role.PRIMARY, healthy=True)
        if o.relay_pending:
            return Decision(Action.WAIT, "holding the lock: still applying transactions "
                            "received from the old primary before opening for writes",
                            role=Role.PRIMARY, healthy=True)
        if o.promote_in > 0 and o.handover_to is None:
            return Decision(Action.WAIT, f"holding the lock: opening for writes in "
                            f"{o.promote_in:.1f}s, once the old primary has surely fenced "
                            "itself", role=Role.PRIMARY, healthy=True)
        return Decision(Action.PROMOTE, "this node holds the leader lock: opening for writes",
                        role=Role.PRIMARY, healthy=True)
    if o.switchover_to is not None:
        target = o.switchover_to
        if target == o.node:
            return Decision(Action.REJECT_SWITCHOVER, f"switchover to {target} requested, but "
                            "it is already the primary", role=Role.PRIMARY, healthy=True)
        if target and target not in o.healthy_members:
            return Decision(Action.REJECT_SWITCHOVER, f"switchover to {target} refused: it is "
                            f"not a healthy member (healthy: "
                            f"{', '.join(o.healthy_members) or 'none'})",
                            role=Role.PRIMARY, healthy=True)
        if not o.healthy_members:
            return Decision(Action.REJECT_SWITCHOVER, "switchover refused: no healthy replica "
                            "to hand over to", role=Role.PRIMARY, healthy=True)
        return Decision(Action.HAND_OVER, f"switchover to {target or 'the best replica'}: "
                        "fencing, recording our position and releasing the lock",
                        role=Role.UNKNOWN, healthy=True)
    return Decision(Action.STAY_PRIMARY, "this node holds the leader lock and is writable",
                    role=Role.PRIMARY, healthy=True)
