"""The decisions: a pure function from what one cycle observed to what to do, and why.

One ordered chain of checks (as Patroni's `_run_cycle`); the first that applies wins and ends
in a one-sentence reason. No I/O here: the daemon observes, calls `decide`, logs the decision
in one line and runs the matching handler. Unit tests replay histories against it.

Fencing rule. Consul expires a session no earlier than its TTL after the last renewal. A
primary whose last successful renewal is older than TTL/2 fences itself (read_only on, client
connections dropped); with LOOP_WAIT <= TTL/4 (enforced in config) the fence lands at the
latest TTL/2 + LOOP_WAIT + one SQL round trip after the last renewal, well before TTL, so no
other node can hold the lock while this one is still writable.
"""

from __future__ import annotations

from .model import Action, Decision, Observation, ProcState, Role


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
    half_ttl = o.session_ttl / 2
    if not o.dcs_ok:
        if writable and o.session_age >= half_ttl:
            return Decision(Action.FENCE, f"Consul unreachable for {o.dcs_unreachable_for:.1f}s "
                            f"and the lock was last renewed {o.session_age:.1f}s ago (limit "
                            f"{half_ttl:.1f}s): fencing before it can pass to another node",
                            role=Role.UNKNOWN, healthy=True)
        if writable:
            return Decision(Action.STAY_PRIMARY, f"Consul unreachable for "
                            f"{o.dcs_unreachable_for:.1f}s; lock renewed {o.session_age:.1f}s "
                            f"ago, fencing at {half_ttl:.1f}s", role=Role.PRIMARY, healthy=True)
        return Decision(Action.WAIT, f"Consul unreachable for {o.dcs_unreachable_for:.1f}s: "
                        "staying read-only until it answers", healthy=True)

    if not o.registered:
        if writable:
            return Decision(Action.FENCE, "our service is not registered in Consul while we "
                            "are writable: fencing first", healthy=True)
        return Decision(Action.REGISTER, "registering the service and its health check in "
                        "Consul", healthy=True)

    # --- the leader lock ----------------------------------------------------------------------
    if o.leader is not None and o.leader != o.node:
        if writable:
            return Decision(Action.FENCE, f"{o.leader} holds the leader lock but this node is "
                            "writable: fencing", role=Role.REPLICA, healthy=True)
        return Decision(Action.FOLLOW, f"{o.leader} is the primary; staying read-only",
                        role=Role.REPLICA, healthy=True)
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
        return Decision(Action.ACQUIRE_LOCK, "the leader lock is free: trying to take it",
                        healthy=True)
    # We hold the lock.
    if o.session_age >= half_ttl:
        return Decision(Action.FENCE, f"our session was last renewed {o.session_age:.1f}s ago "
                        f"(limit {half_ttl:.1f}s): fencing before the lock can pass on",
                        role=Role.UNKNOWN, healthy=True)
    if not writable:
        return Decision(Action.PROMOTE, "this node holds the leader lock: opening for writes",
                        role=Role.PRIMARY, healthy=True)
    return Decision(Action.STAY_PRIMARY, "this node holds the leader lock and is writable",
                    role=Role.PRIMARY, healthy=True)
