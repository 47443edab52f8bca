"""The decision function over many observed states (no I/O: pure values in, decisions out)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from autopilot_mysql.election import Handover, Published, SyncState
from autopilot_mysql.ha import decide
from autopilot_mysql.model import Action, Observation, ProcState, Replication, Role

# A healthy replica-to-be: mysqld answers, Consul answers, registered and passing.
BASE = Observation(node="db1", mysqld=ProcState.RUNNING, mysql_alive=True, read_only=True,
                   dcs_ok=True, registered=True, check_passing=True, session="s1",
                   lease_left=1.5, lease=2.0, leader=None, data_id="d1")


def pos(*pairs: tuple[str, str]) -> tuple[Published, ...]:
    return tuple(Published(n, g, f"d-{n}") for n, g in pairs)


def d(**kw: object) -> Action:
    return decide(replace(BASE, **kw)).action  # type: ignore[arg-type]


def test_stop_wins_over_everything() -> None:
    assert d(stopping=True, leader="db1", read_only=False) == Action.SHUTDOWN


@pytest.mark.parametrize("state,restart_in,expected", [
    (ProcState.FAILED, 0.0, Action.WAIT),
    (ProcState.BACKOFF, 2.0, Action.WAIT),
    (ProcState.BACKOFF, 0.0, Action.RESTART_MYSQLD),
    (ProcState.STOPPED, 0.0, Action.WAIT),
])
def test_mysqld_states(state: ProcState, restart_in: float, expected: Action) -> None:
    decision = decide(replace(BASE, mysqld=state, mysqld_restart_in=restart_in,
                              mysql_alive=False, read_only=None, mysqld_last_error="boom"))
    assert decision.action == expected
    assert not decision.healthy
    if state != ProcState.STOPPED:
        assert "boom" in decision.reason  # the operator sees why


def test_running_but_not_answering_waits_unhealthy() -> None:
    decision = decide(replace(BASE, mysql_alive=False, read_only=None))
    assert decision.action == Action.WAIT and not decision.healthy


def test_first_boot_path_register_wait_session_publish_lock_promote() -> None:
    assert d(registered=False, check_passing=False, session=None) == Action.REGISTER
    assert d(check_passing=False, session=None) == Action.WAIT
    assert d(session=None) == Action.CREATE_SESSION
    assert d(published=None) == Action.PUBLISH_POSITION
    assert d(published="") == Action.ACQUIRE_LOCK  # alone: no voter to wait for
    promote = decide(replace(BASE, leader="db1"))
    assert promote.action == Action.PROMOTE and promote.role == Role.PRIMARY
    assert d(leader="db1", read_only=False) == Action.STAY_PRIMARY
    assert d(leader="db1", promote_in=1.5) == Action.WAIT  # the old primary may still write


REPLICATING = Replication(master_host="10.0.0.2", io_running=True, sql_running=True,
                          seconds_behind=0)
L2 = dict(leader="db2", leader_address="10.0.0.2")


def test_a_primary_that_lost_consul_only_is_deposed_once_its_lease_surely_ran_out() -> None:
    """Behaviour 4: its heartbeat stopped for longer than its lease (by our clock) and its own
    endpoint says it is fenced (or nothing): end its session instead of waiting 2 x TTL."""
    silent = dict(**L2, replica=REPLICATING, leader_lease=2.0)
    assert d(**silent, leader_silent_for=2.5, leader_says="fenced") == Action.STAY_REPLICA
    assert d(**silent, leader_silent_for=2.8, leader_says="fenced") == Action.DEPOSE
    assert d(**silent, leader_silent_for=2.8, leader_says="unreachable") == Action.DEPOSE
    # it says it is writable (it still believes in its lock), or we do not know yet: wait
    assert d(**silent, leader_silent_for=9.0, leader_says="writable") == Action.STAY_REPLICA
    assert d(**silent, leader_silent_for=9.0, leader_says="") == Action.STAY_REPLICA
    # the longer of the two leases counts (a rolling change of LOOP_WAIT)
    assert d(**{**silent, "leader_lease": 4.0}, leader_silent_for=3.0,
             leader_says="fenced") == Action.STAY_REPLICA


def test_a_node_whose_recovery_truncated_its_binlog_replicates_only_under_a_new_id() -> None:
    """Its recovery truncated commits a member acknowledged; they come back from the new
    primary with our old server_id, and a replica skips events with its own server_id."""
    waiting = decide(replace(BASE, **L2,  # type: ignore[arg-type]
                             identity_pending="mysqld's recovery truncated our binary log"))
    assert waiting.action == Action.WAIT and waiting.healthy and "new server_id" in waiting.reason
    assert d(**L2) == Action.FOLLOW


def test_another_leader_means_follow_or_fence() -> None:
    follow = decide(replace(BASE, **L2))  # type: ignore[arg-type]
    assert follow.action == Action.FOLLOW and follow.role == Role.REPLICA
    assert d(**L2, read_only=False) == Action.FENCE
    assert d(**L2, replica=REPLICATING) == Action.STAY_REPLICA
    # pointed elsewhere (the old primary), or stopped: re-point / restart
    assert d(**L2, replica=replace(REPLICATING, master_host="10.0.0.1")) == Action.FOLLOW
    assert d(**L2, replica=replace(REPLICATING, io_running=False)) == Action.FOLLOW
    # still connecting (the primary is restarting, say): wait, do not re-point every cycle
    connecting = replace(REPLICATING, io_running=False, io_connecting=True, last_io_errno=2003)
    assert d(**L2, replica=connecting) == Action.STAY_REPLICA


def test_a_voter_waits_briefly_for_the_new_primarys_set_before_it_follows() -> None:
    """A switchover as a client sees it: following before the new primary wrote its set means
    acknowledgements off, one more IO restart, and the first commits waiting for an ack."""
    wait = decide(replace(BASE, **L2, ack_set_pending=0.6))  # type: ignore[arg-type]
    assert wait.action == Action.WAIT and wait.healthy and wait.role == Role.REPLICA
    assert "acknowledgement set" in wait.reason
    assert d(**L2, ack_set_pending=0.6, replica=replace(REPLICATING, master_host="10.0.0.1")) \
        == Action.WAIT
    assert d(**L2, ack_set_pending=0.0) == Action.FOLLOW  # waited long enough
    # already following it: the wait is for pointing replication, nothing else
    assert d(**L2, ack_set_pending=0.6, replica=REPLICATING) == Action.STAY_REPLICA
    assert d(**L2, ack_set_pending=0.6, read_only=False) == Action.FENCE


def test_errant_transactions_are_detected_and_keep_the_node_out() -> None:
    assert d(**L2, replica=REPLICATING, refused="errant",
             refusal_confirmed=True) == Action.MARK_ERRANT
    stuck = decide(replace(BASE, **L2, errant=("0-1-8..0-1-9",)))  # type: ignore[arg-type]
    assert stuck.action == Action.WAIT and not stuck.healthy and "0-1-8..0-1-9" in stuck.reason
    assert d(errant=("0-1-9",), gtid="0-1-9", published="0-1-9") == Action.WAIT  # no candidate
    # ... unless an operator forces it to take over (its errant transactions are then kept)
    forced = decide(replace(BASE, errant=("0-1-9",), gtid="0-1-9", forced=BASE.node))
    assert forced.action == Action.PUBLISH_POSITION


def test_a_node_behind_purged_binary_logs_is_not_errant() -> None:
    """Defect 10: IO error 1236 because the primary purged what we need is reported as that
    (re-provision with newer data), never as errant transactions."""
    assert d(**L2, replica=REPLICATING, refused="behind",
             refusal_confirmed=True) == Action.MARK_BEHIND
    stuck = decide(replace(BASE, **L2, behind="the primary purged ..."))  # type: ignore[arg-type]
    assert stuck.action == Action.WAIT and not stuck.healthy and "purged" in stuck.reason
    assert "errant" not in stuck.reason


def test_a_replica_acknowledges_exactly_while_in_the_acknowledgement_set() -> None:
    """election.I2 on the replica's side: semi-sync on only when the primary counts us."""
    assert d(**L2, replica=REPLICATING, in_ack_set=True, semi_sync_replica=True) == \
        Action.STAY_REPLICA
    assert d(**L2, replica=REPLICATING, in_ack_set=True, semi_sync_replica=False) == \
        Action.FOLLOW
    assert d(**L2, replica=REPLICATING, in_ack_set=False, semi_sync_replica=True) == \
        Action.FOLLOW


def test_lost_session_while_writable_fences() -> None:
    assert d(session=None, leader=None, read_only=False) == Action.FENCE
    assert d(leader=None, read_only=False) == Action.FENCE


def test_an_expired_lease_fences() -> None:
    assert d(leader="db1", read_only=False, lease_left=0.1) == Action.STAY_PRIMARY
    assert d(leader="db1", read_only=False, lease_left=0.0) == Action.FENCE


def test_consul_unreachable() -> None:
    # A read-only node just waits; a primary keeps serving only while its lease holds.
    assert d(dcs_ok=False) == Action.WAIT
    assert d(dcs_ok=False, read_only=False, leader="db1", lease_left=0.5) == Action.STAY_PRIMARY
    assert d(dcs_ok=False, read_only=False, leader="db1", lease_left=-1.0) == Action.FENCE


E = dict(published="0-1-10", gtid="0-1-10", voters=("db2", "db3"))


def test_election_drains_then_publishes_then_waits_for_voters() -> None:
    assert d(replica=REPLICATING, drained=False) == Action.DRAIN
    assert d(replica=REPLICATING, drained=True, gtid="0-1-10", published=None) == \
        Action.PUBLISH_POSITION
    waiting = decide(replace(BASE, **E, positions=pos(("db2", "0-1-9"))))  # type: ignore[arg-type]
    assert waiting.action == Action.WAIT and "db3" in waiting.reason
    # ... healthy voters that the invariants do not need are waited for only so long
    assert d(**E, positions=pos(("db2", "0-1-9")), election_age=5.0) == Action.ACQUIRE_LOCK


def test_a_restarted_replica_applies_its_relay_log_before_the_election() -> None:
    # GTID replication discards a restarted replica's relay log at START SLAVE: what it had
    # received (and acknowledged) would be gone from its claim, even with a leader key held
    # (its holder may have died with it). `relay_kept` is only set for a member of the set.
    stopped = replace(REPLICATING, io_running=False, sql_running=False)
    assert d(replica=stopped, relay_kept=True) == Action.RECOVER_RELAY
    assert d(replica=stopped, relay_kept=False) == Action.DRAIN
    assert d(replica=stopped, relay_kept=True, **L2) == Action.RECOVER_RELAY  # it may be dead
    assert d(replica=stopped, relay_kept=False, **L2) == Action.FOLLOW


def test_a_position_published_for_another_term_is_published_again() -> None:
    # election.I5: the acknowledgement set moved on (a term came and went) since we published.
    sync = SyncState(primary="db2", primary_data="d2", index=7)
    assert d(**E, sync=sync, published_term=3) == Action.PUBLISH_POSITION
    assert d(**E, sync=sync, published_term=7) != Action.PUBLISH_POSITION
    assert d(handing_over=True, published="", sync=sync, published_term=3) == \
        Action.PUBLISH_POSITION


@pytest.mark.parametrize("others,expected", [
    ((("db2", "0-1-9"), ("db3", "0-1-8")), Action.ACQUIRE_LOCK),  # most advanced
    ((("db2", "0-1-11"), ("db3", "0-1-8")), Action.WAIT),  # a lagging candidate waits
    ((("db2", "0-1-10"), ("db3", "0-1-10")), Action.ACQUIRE_LOCK),  # tie: lowest name (db1)
    ((("db0", "0-1-10"), ("db3", "0-1-10")), Action.WAIT),  # tie, but db0 sorts first
    ((("db2", "garbage"), ("db3", "0-1-3")), Action.WAIT),  # unreadable: not published yet
])
def test_only_the_most_advanced_candidate_takes_the_lock(
        others: tuple[tuple[str, str], ...], expected: Action) -> None:
    voters = tuple(n for n, _ in others)
    assert d(**{**E, "voters": voters}, positions=pos(*others)) == expected


def test_unreadable_position_is_no_candidate_after_the_timeout() -> None:
    assert d(**E, positions=pos(("db2", "garbage"), ("db3", "0-1-3")),
             election_age=9.0) == Action.ACQUIRE_LOCK


def test_one_node_left_takes_over_alone() -> None:
    assert d(**{**E, "voters": ()}) == Action.ACQUIRE_LOCK


def test_no_automatic_takeover_from_a_primary_that_ran_asynchronously() -> None:
    # db2, the last primary, acknowledged commits with no synchronous replica (its set is not
    # synced): only it is sure to have them, so nobody else takes the lock, however far
    # ahead; it may take it back itself.
    unsynced = SyncState(primary="db2", primary_data="d-db2", members=(("db1", "d1"),))
    blocked = decide(replace(BASE, **{**E, "voters": ()}, sync=unsynced))  # type: ignore[arg-type]
    assert blocked.action == Action.WAIT and "db2" in blocked.reason
    assert "failover --candidate" in blocked.reason  # what the operator can do
    mine = SyncState(primary="db1", primary_data="d1")
    assert d(**{**E, "voters": ()}, sync=mine) == Action.ACQUIRE_LOCK
    assert d(**{**E, "voters": ()}, sync=None) == Action.ACQUIRE_LOCK


def test_consul_flapping_never_promotes_without_the_lock() -> None:
    history = [dict(dcs_ok=False), dict(dcs_ok=True, **L2), dict(dcs_ok=False),
               dict(dcs_ok=True, leader=None, session=None), dict(dcs_ok=True, **L2),
               dict(dcs_ok=False, leader="db1", lease_left=-7.0)]
    for step in history:
        assert d(**step) != Action.PROMOTE


def test_unregistered_writable_node_fences_first() -> None:
    assert d(registered=False, read_only=False, leader="db1") == Action.FENCE


P = dict(leader="db1", read_only=False, voters=("db3",), healthy_members=("db2", "db3"))


def test_switchover_requests_on_the_primary() -> None:
    assert d(**P, switchover_to="db2") == Action.HAND_OVER
    assert d(**P, switchover_to="") == Action.HAND_OVER  # to the best replica
    assert d(**P, switchover_to="db9") == Action.REJECT_SWITCHOVER  # not a healthy member
    assert d(**P, switchover_to="db1") == Action.REJECT_SWITCHOVER
    assert d(**{**P, "healthy_members": ()}, switchover_to="") == Action.REJECT_SWITCHOVER


def test_after_a_handover_the_target_wins_ties_and_skips_the_fence_grace() -> None:
    h = Handover("db0", "0-1-10", "db1")
    tie = dict(gtid="0-1-10", published="0-1-10", voters=("db0",),
               positions=pos(("db0", "0-1-10")))
    assert d(**tie) == Action.WAIT  # db0 sorts first
    assert d(**tie, handover=h) == Action.ACQUIRE_LOCK  # the requested target
    assert d(leader="db1", promote_in=0.0, handover=h) == Action.PROMOTE
    # the old primary publishes what it holds, then stays out of the election it handed over
    assert d(handing_over=True, published=None) == Action.PUBLISH_POSITION
    assert d(handing_over=True, published="") == Action.WAIT


def test_I10_a_switchover_target_takes_the_handed_over_lock_in_one_action() -> None:
    sync = SyncState(primary="db0", primary_data="d0", members=(("db1", "d1"),), synced=True,
                     index=42)
    h = Handover("db0", "0-1-10", "db1", term=42, index=50)
    replicating = dict(replica=REPLICATING, gtid="0-1-9", sync=sync)
    # no drain, no published position, no election: the take-over does it all
    take = decide(replace(BASE, **replicating, handover=h))  # type: ignore[arg-type]
    assert take.action == Action.TAKE_OVER and "db0" in take.reason
    # even without a session yet (it creates one itself), once its check passes
    assert d(**replicating, handover=h, session=None) == Action.TAKE_OVER
    assert d(**replicating, handover=h, session=None, check_passing=False) == Action.WAIT
    # anyone else, a stale term, a failed attempt, or a full volume: the election as before
    assert d(**replicating, handover=replace(h, to="db2")) == Action.DRAIN
    assert d(**replicating, handover=replace(h, term=41)) == Action.DRAIN
    assert d(**replicating, handover=h, takeover_tried=True) == Action.DRAIN
    assert d(**replicating, handover=h, disk_full="full") == Action.DRAIN
    # what stops any election stops a take-over too
    assert d(**replicating, handover=h, relay_kept=True) == Action.RECOVER_RELAY
    assert d(**replicating, handover=h, errant=("0-9-1",)) == Action.WAIT


def test_a_handover_nobody_takes_is_aborted() -> None:
    """Defect 9: the target died; the old primary takes part again after the timeout."""
    assert d(handing_over=True, published="", handover_age=9.0) == Action.WAIT
    assert d(handing_over=True, published="", handover_age=10.0) == Action.ABORT_HANDOVER


def test_a_target_that_lacks_the_handed_over_position_never_takes_the_lock() -> None:
    """Defect 3: the target may open only once it holds what the old primary fenced at."""
    h = Handover("db0", "0-1-12", "db1")
    assert d(gtid="0-1-10", published="0-1-10", voters=(), handover=h) == Action.WAIT


def test_the_new_primary_applies_everything_it_received_before_opening() -> None:
    assert d(leader="db1", replica=REPLICATING, drained=True, relay_pending=True) == Action.WAIT
    assert d(leader="db1", replica=REPLICATING, drained=True) == Action.PROMOTE


def test_a_lock_holder_that_cannot_apply_gives_the_lock_up() -> None:
    """Defect 8: a stuck SQL thread must not hold the lock (and the cluster) for ever."""
    stalled = decide(replace(BASE, leader="db1", replica=REPLICATING, drained=True,
                             relay_pending=True, apply_stalled="the SQL thread stopped: 1062"))
    assert stalled.action == Action.RELEASE and "1062" in stalled.reason


def test_an_unreadable_leader_key_is_taken_by_nobody() -> None:
    """Defect 11: a held leader key with a malformed value: wait (fence first if writable)."""
    assert d(leader_unreadable=True) == Action.WAIT
    assert d(leader_unreadable=True, read_only=False) == Action.FENCE


def test_a_primary_whose_volume_is_full_hands_over_to_a_replica_with_room() -> None:
    """Behaviour 7: a full data volume is a fault like any other."""
    full = dict(leader="db1", read_only=False, healthy_members=("db2", "db3"),
                disk_full="the data volume has 10M free (DISK_MIN_FREE 256M)")
    assert d(**full, roomy_members=("db3",)) == Action.HAND_OVER
    stay = decide(replace(BASE, **full, roomy_members=()))  # type: ignore[arg-type]
    assert stay.action == Action.STAY_PRIMARY and "no healthy replica has room" in stay.reason
    # a node with a full volume takes part in an election but is no candidate
    assert d(gtid="0-1-9", published="0-1-9", disk_full="full", voters=()) == Action.WAIT


def test_a_refusal_counts_only_once_the_refusing_node_proves_it_is_still_the_primary() -> None:
    """Nemesis seed 2086918069: a primary crashed itself, its recovery truncated two commits a
    replica had acknowledged, and its restarted mysqld (no longer primary, Consul unreachable)
    refused that replica's position; the replica took itself for errant and was rebuilt from
    a copy, destroying the last copy of those commits. A refusal is judged only after a
    heartbeat of the refusing node, first seen after the refusal, proves it holds the lock."""
    for refused in ("errant", "behind"):
        decision = decide(replace(BASE, **L2, replica=REPLICATING, refused=refused))
        assert decision.action == Action.WAIT and "proved its lock" in decision.reason


def test_maintenance_mode_holds_back_failover_and_restarts_but_not_fencing() -> None:
    paused = "paused by ops@h at t: disk swap"
    last = SyncState(primary="db9", primary_data="d9", members=(("db1", "d1"),), synced=True)
    # No election: not even draining (replication keeps retrying the lost primary).
    held = decide(replace(BASE, **E, paused=paused, sync=last, replica=REPLICATING))
    assert held.action == Action.WAIT and "maintenance mode" in held.reason
    assert "db9" in held.reason and "resume" in held.reason
    assert d(**{**E, "voters": ()}, sync=last) == Action.ACQUIRE_LOCK  # the control
    # The last primary takes its lock back; an operator's forced candidate and a
    # switchover's target still go ahead; a cluster that never had a primary elects one.
    mine = replace(last, primary="db1")
    assert d(**{**E, "voters": ()}, paused=paused, sync=mine) == Action.ACQUIRE_LOCK
    assert d(**{**E, "voters": ()}, paused=paused, sync=last, forced="db1") == \
        Action.ACQUIRE_LOCK
    assert d(**{**E, "voters": ()}, paused=paused, sync=None) == Action.ACQUIRE_LOCK
    h = Handover("db9", "0-1-10", "db1", term=0)
    assert d(paused=paused, sync=last, handover=h, gtid="0-1-10", session=None) == \
        Action.TAKE_OVER
    # An exited mysqld stays down while paused, restarted at once after.
    down = decide(replace(BASE, paused=paused, mysqld=ProcState.BACKOFF, mysqld_restart_in=0,
                          mysqld_last_error="mysqld killed by SIGKILL"))
    assert down.action == Action.WAIT and "not restarted" in down.reason
    assert d(mysqld=ProcState.BACKOFF, mysqld_restart_in=0) == Action.RESTART_MYSQLD
    # Fencing is never paused.
    assert d(paused=paused, leader="db2", leader_address="10.0.0.2", read_only=False) == \
        Action.FENCE
    assert d(paused=paused, read_only=False, session=None) == Action.FENCE


def test_a_nofailover_node_is_never_elected_but_gives_its_position_when_required() -> None:
    last = SyncState(primary="db9", primary_data="d9", members=(("db1", "d1"), ("db2", "d2")),
                     synced=True)
    # Not required (not in the acknowledgement set): it waits, publishing nothing.
    w = decide(replace(BASE, **E, nofailover=True, sync=last, replica=REPLICATING))
    assert w.action == Action.WAIT and "NOFAILOVER" in w.reason
    assert d(nofailover=True, required=False, published=None, gtid="0-1-10") == Action.WAIT
    # Required (it may hold acknowledged commits): drain, publish, never take the lock.
    assert d(nofailover=True, required=True, sync=last, replica=REPLICATING) == Action.DRAIN
    assert d(nofailover=True, required=True, sync=last, drained=True, gtid="0-1-10",
             published=None) == Action.PUBLISH_POSITION
    w = decide(replace(BASE, **{**E, "voters": ()}, nofailover=True, required=True, sync=None))
    assert w.action == Action.WAIT and "never wins" in w.reason
    # An operator may still force it.
    assert d(**{**E, "voters": ()}, nofailover=True, forced="db1") == Action.ACQUIRE_LOCK
    # The primary refuses a switchover to a node that may not be elected (the node's view
    # of the healthy members leaves NOFAILOVER ones out).
    p = replace(BASE, leader="db1", read_only=False, lease_left=1.5, lock_valid_until=2.0,
                switchover_to="db3", healthy_members=("db2",))
    r = decide(p)
    assert r.action == Action.REJECT_SWITCHOVER and "NOFAILOVER" in r.reason
