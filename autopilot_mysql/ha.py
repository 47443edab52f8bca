"""The decisions of the replication topology: a pure function from what one cycle observed to
what to do, and why.

One ordered chain of checks (as Patroni's `_run_cycle`); the first that applies wins and ends
in a one-sentence reason. No I/O here: the node observes, calls `decide`, the daemon logs the
decision in one line and the node runs the matching handler. Unit tests replay histories.

The safety rules themselves (who may take the lock, when a new primary may open, how the
acknowledgement set changes) are election.py's invariants; this chain applies them:
- writable only with a valid lease (election.I1): an expired lease, a lost session, another
  node's lock, an unregistered service all fence first;
- the free lock goes to the node election.decide_election names (I5, I7), or at once to a
  switchover's target that holds the handed-over position (I10); the others wait, saying
  which positions are missing or why nobody may take it;
- the new holder opens once it applied what it received and the old lease ran out (I6);
- a replica follows the primary, with semi-sync acknowledgements on exactly when it is in the
  primary's acknowledgement set (I2).

Maintenance mode (`autopilot-mysql pause`) takes away what an operator at work does not want
done behind their back: no node but the last primary takes the free lock (a switchover and a
forced failover still run), and an exited mysqld is not restarted. Fencing is untouched: a
paused cluster still never has two writable nodes.
"""

from __future__ import annotations

from . import election
from .election import GRACE_MARGIN
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
        if o.paused:
            return Decision(Action.WAIT, f"maintenance mode ({o.paused}): mysqld exited "
                            f"({o.mysqld_last_error}) and is not restarted while the cluster "
                            "is paused; `autopilot-mysql resume` restarts it")
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
        if writable and o.lease_left <= 0:
            return Decision(Action.FENCE, f"Consul unreachable for {o.dcs_unreachable_for:.1f}s "
                            f"and our lease ran out ({o.lease:.1f}s without a heartbeat that "
                            "proved the lock): fencing before it can pass to another node",
                            healthy=True)
        if writable:
            return Decision(Action.STAY_PRIMARY, f"Consul unreachable for "
                            f"{o.dcs_unreachable_for:.1f}s; our lease holds {o.lease_left:.1f}s "
                            "more", role=Role.PRIMARY, healthy=True)
        return Decision(Action.WAIT, f"Consul unreachable for {o.dcs_unreachable_for:.1f}s: "
                        "staying read-only until it answers", healthy=True)

    if not o.registered:
        if writable:
            return Decision(Action.FENCE, "our service is not registered in Consul while we "
                            "are writable: fencing first", healthy=True)
        return Decision(Action.REGISTER, "registering the service and its health check in "
                        "Consul", healthy=True)

    if o.leader_unreadable:
        if writable:
            return Decision(Action.FENCE, "the leader key is held but unreadable: fencing",
                            healthy=True)
        return Decision(Action.WAIT, "the leader key is held by a session but its value cannot "
                        "be read (see the warning above): nobody follows or takes it until it "
                        "is fixed", healthy=True)
    if o.leader is not None and o.leader != o.node:
        return _replica(o, writable)
    if o.session is None:
        if writable:
            return Decision(Action.FENCE, "we have no Consul session but are writable: fencing",
                            healthy=True)
        if not o.check_passing:
            return Decision(Action.WAIT, "waiting for Consul's health check of this node to "
                            "pass before joining the election", healthy=True)
        if o.leader is None and _takes_over(o):
            return _election(o, writable)  # the take-over creates its session (no extra cycle)
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
    bound = max(o.lease, o.leader_lease) + GRACE_MARGIN
    if o.leader_silent_for > bound and o.leader_says in ("fenced", "unreachable") \
            and o.check_passing:
        says = "it is fenced" if o.leader_says == "fenced" else "nothing"
        return Decision(Action.DEPOSE, f"the primary {o.leader} has not proved its lock for "
                        f"{o.leader_silent_for:.1f}s (its lease is {o.leader_lease:.1f}s) and "
                        f"its own endpoint says {says}: it lost Consul. Ending its session so "
                        "that an election can run", role=Role.REPLICA, healthy=True)
    if o.errant:
        return Decision(Action.WAIT, f"this node holds transactions the primary {o.leader} "
                        f"never had: {', '.join(o.errant)}. It neither replicates nor serves "
                        "until it is re-provisioned (automatic with snapshots, or: empty its "
                        "data directory and restart it)", role=Role.REPLICA)
    if o.behind:
        return Decision(Action.WAIT, f"{o.behind}. It neither replicates nor serves until it "
                        "is re-provisioned (automatic with snapshots, or: empty its data "
                        "directory and restart it)", role=Role.REPLICA)
    if o.refused and not o.refusal_confirmed:
        return Decision(Action.WAIT, f"{leader} refuses our GTID position {o.gtid or '(empty)'}"
                        " but has not proved its lock since: it may have restarted, and lost "
                        "what we hold. Judging once a heartbeat of its confirms it is the "
                        "primary", role=Role.REPLICA)
    if o.refused == "errant":
        return Decision(Action.MARK_ERRANT, f"{leader} refuses our GTID position {o.gtid}: "
                        "we hold transactions it never had", role=Role.REPLICA)
    if o.refused == "behind":
        return Decision(Action.MARK_BEHIND, f"{leader} no longer has the binary logs that "
                        f"follow our position {o.gtid or '(empty)'} (purged)", role=Role.REPLICA)
    r = o.replica
    if o.identity_pending:
        # Replicas skip events that carry their own server_id: ours, which our recovery
        # truncated or our rebuild lacks, would never come back under the old one.
        return Decision(Action.WAIT, f"{o.identity_pending}: this node takes a new server_id "
                        f"from Consul before it replicates from {leader}", role=Role.REPLICA,
                        healthy=True)
    if o.relay_kept:  # before START SLAVE discards it; `leader` may be gone without a word
        return Decision(Action.RECOVER_RELAY, "mysqld restarted with transactions it had "
                        "received still in its relay log (acknowledged commits, perhaps): "
                        f"applying them before replicating from {leader}", role=Role.REPLICA,
                        healthy=True)
    if (r is None or r.master_host != o.leader_address) and o.ack_set_pending > 0:
        return Decision(Action.WAIT, f"{leader} took the lock: waiting up to "
                        f"{o.ack_set_pending:.1f}s for its acknowledgement set, to follow it "
                        "with semi-sync acknowledgements on at once", role=Role.REPLICA,
                        healthy=True)
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
    if o.in_ack_set != o.semi_sync_replica:
        return Decision(Action.FOLLOW, f"{o.leader} "
                        f"{'added this node to' if o.in_ack_set else 'does not count this node in'}"
                        f" its acknowledgement set: restarting the IO thread with semi-sync "
                        f"acknowledgements {'on' if o.in_ack_set else 'off'}",
                        role=Role.REPLICA, healthy=True)
    lag = "?" if r.seconds_behind is None else f"{r.seconds_behind}s"
    acks = ", acknowledging" if o.semi_sync_replica else ""
    return Decision(Action.STAY_REPLICA, f"replicating from {leader}, {lag} behind{acks}",
                    role=Role.REPLICA, healthy=True)


def _takes_over(o: Observation) -> bool:
    """election.I10: a switchover named us, in this term, and nothing stops us opening."""
    return election.may_take_over(o.handover, o.node, o.sync) and not o.takeover_tried \
        and not o.disk_full and not o.apply_stalled


def _published(o: Observation) -> bool:
    """Our published position is what we hold, for this election's term (election.I5)."""
    return o.published == o.gtid and o.published_term == election.term(o.sync)


def _election(o: Observation, writable: bool) -> Decision:
    if writable:
        return Decision(Action.FENCE, "the leader key is free but this node is writable: "
                        "fencing", healthy=True)
    if o.handing_over:
        if o.handover_age < o.handover_timeout:
            if not _published(o):  # the election must be able to cover what we hold
                return Decision(Action.PUBLISH_POSITION, f"handed over: publishing our "
                                f"position {o.gtid or '(empty)'}", healthy=True)
            return Decision(Action.WAIT, f"handed the primary role over"
                            f"{' to ' + o.handover.to if o.handover and o.handover.to else ''}: "
                            f"waiting for the new primary (up to "
                            f"{o.handover_timeout - o.handover_age:.1f}s more)", healthy=True)
        return Decision(Action.ABORT_HANDOVER, f"nobody took the lock within "
                        f"{o.handover_timeout:.0f}s of our handover: taking part in the "
                        "election again (we hold the handed-over position)", healthy=True)
    if o.errant and o.forced != o.node:
        return Decision(Action.WAIT, f"no primary, and this node holds errant transactions "
                        f"({', '.join(o.errant)}): it may not take part (re-provision it, or "
                        f"force it: autopilot-mysql failover --candidate {o.node} --force)",
                        role=Role.UNKNOWN)
    if o.promised_for > 0:
        return Decision(Action.WAIT, f"this node confirmed {o.promised_to}'s failsafe lease "
                        f"(Consul was down for both): not taking part in an election for "
                        f"{o.promised_for:.1f}s more", healthy=True)
    if o.relay_kept:
        return Decision(Action.RECOVER_RELAY, "no primary, and mysqld restarted with "
                        "transactions it had received still in its relay log (acknowledged "
                        "commits, perhaps): applying them before the election", healthy=True)
    if _takes_over(o):
        assert o.handover is not None
        return Decision(Action.TAKE_OVER, f"{o.handover.from_node} handed the primary role "
                        f"over to this node at {o.handover.gtid} (switchover): applying up to "
                        "it, taking the lock and opening", healthy=True)
    if o.nofailover and o.forced != o.node:
        if not o.required:
            return Decision(Action.WAIT, "no primary; this node is tagged NOFAILOVER: it is "
                            "never elected, and waits for the others to elect one", healthy=True)
        # It may hold acknowledged commits: the election needs its position (published as
        # no candidate's, so that the winner must cover it).
        if o.replica is not None and not o.drained:
            return Decision(Action.DRAIN, "the primary is gone: stopping replication and "
                            "applying the relay log (NOFAILOVER: for the election's sake, not "
                            "to take part)", healthy=True)
        if not _published(o):
            return Decision(Action.PUBLISH_POSITION, f"publishing our position "
                            f"{o.gtid or '(empty)'}: tagged NOFAILOVER, it is no candidate, "
                            "but it may hold acknowledged commits the winner must cover",
                            healthy=True)
        return Decision(Action.WAIT, "no primary; tagged NOFAILOVER: our position is "
                        "published for the election, which this node never wins", healthy=True)
    if o.paused and o.forced != o.node and o.sync is not None and o.sync.primary != o.node:
        return Decision(Action.WAIT, f"no primary, and maintenance mode is on ({o.paused}): "
                        f"no automatic failover; only {o.sync.primary}, the last primary, may "
                        "take the lock back. `autopilot-mysql resume` lets the election run, "
                        f"`autopilot-mysql failover --candidate {o.node}` names a new primary",
                        healthy=True)
    if o.replica is not None and not o.drained:
        return Decision(Action.DRAIN, "the primary is gone: stopping replication and applying "
                        "the relay log before the election", healthy=True)
    if not _published(o):
        return Decision(Action.PUBLISH_POSITION, f"publishing our position "
                        f"{o.gtid or '(empty)'} for the election", healthy=True)
    mine = election.Published(o.node, o.gtid, o.data_id,
                              can_apply=not o.apply_stalled and not o.disk_full,
                              term=election.term(o.sync), primary=o.published_primary)
    positions = {p.node: p for p in o.positions if p.node != o.node}
    positions[o.node] = mine
    out = election.decide_election(
        o.node, positions, o.sync, voters=o.voters, voters_waited=o.election_age,
        voter_timeout=o.voter_timeout, handover=o.handover, forced=o.forced)
    if out.verdict == election.Verdict.TAKE:
        return Decision(Action.ACQUIRE_LOCK, f"{out.reason}: taking the leader lock",
                        healthy=True)
    if out.verdict == election.Verdict.DEFER:
        return Decision(Action.WAIT, f"{out.reason}: leaving the lock to it", healthy=True)
    if out.verdict == election.Verdict.BLOCKED:
        return Decision(Action.WAIT, f"no primary: {out.reason}", healthy=True)
    return Decision(Action.WAIT, f"no primary yet: {out.reason}", healthy=True)


def _primary(o: Observation, writable: bool) -> Decision:
    if o.lease_left <= 0:
        return Decision(Action.FENCE, f"our lease ran out (no heartbeat proved the lock for "
                        f"{o.lease:.1f}s): fencing before the lock can pass on", healthy=True)
    if not writable:
        if o.replica is not None and not o.drained:
            return Decision(Action.DRAIN, "holding the lock: applying the relay log before "
                            "opening for writes", role=Role.PRIMARY, healthy=True)
        if o.apply_stalled:
            return Decision(Action.RELEASE, f"holding the lock but cannot open: {o.apply_stalled}"
                            ". Releasing it (our position stays published as one that cannot "
                            "be applied)", healthy=True)
        if o.relay_pending:
            return Decision(Action.WAIT, "holding the lock: still applying transactions "
                            "received from the old primary before opening for writes",
                            role=Role.PRIMARY, healthy=True)
        if o.promote_in > 0:
            return Decision(Action.WAIT, f"holding the lock: opening for writes in "
                            f"{o.promote_in:.1f}s, once the old primary's lease surely ran out",
                            role=Role.PRIMARY, healthy=True)
        return Decision(Action.PROMOTE, "this node holds the leader lock: opening for writes",
                        role=Role.PRIMARY, healthy=True)
    if o.disk_full and o.switchover_to is None:
        if o.roomy_members:
            return Decision(Action.HAND_OVER, f"{o.disk_full}: handing the primary role over "
                            f"to a replica with room ({', '.join(o.roomy_members)})",
                            role=Role.UNKNOWN, healthy=True)
        return Decision(Action.STAY_PRIMARY, f"{o.disk_full}, and no healthy replica has room "
                        "either: writes wait for space. Free space on a data volume (or grow "
                        "it); nothing is lost meanwhile", role=Role.PRIMARY, healthy=True)
    if o.switchover_to is not None:
        target = o.switchover_to
        if target == o.node:
            return Decision(Action.REJECT_SWITCHOVER, f"switchover to {target} requested, but "
                            "it is already the primary", role=Role.PRIMARY, healthy=True)
        if target and target not in o.healthy_members:
            return Decision(Action.REJECT_SWITCHOVER, f"switchover to {target} refused: it is "
                            f"not a healthy member that may be elected (NOFAILOVER ones never "
                            f"are; those that may: {', '.join(o.healthy_members) or 'none'})",
                            role=Role.PRIMARY, healthy=True)
        if not o.healthy_members:
            return Decision(Action.REJECT_SWITCHOVER, "switchover refused: no healthy replica "
                            "to hand over to", role=Role.PRIMARY, healthy=True)
        return Decision(Action.HAND_OVER, f"switchover to {target or 'the best replica'}: "
                        "fencing, recording our position and releasing the lock",
                        role=Role.UNKNOWN, healthy=True)
    return Decision(Action.STAY_PRIMARY, "this node holds the leader lock and is writable",
                    role=Role.PRIMARY, healthy=True)
