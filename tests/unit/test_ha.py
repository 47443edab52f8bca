"""The decision function over many observed states (no I/O: pure values in, decisions out)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from autopilot_mysql.ha import decide
from autopilot_mysql.model import Action, Observation, ProcState, Replication, Role

# A healthy replica-to-be: mysqld answers, Consul answers, registered and passing.
BASE = Observation(node="db1", mysqld=ProcState.RUNNING, mysql_alive=True, read_only=True,
                   dcs_ok=True, registered=True, check_passing=True, session="s1",
                   session_age=0.5, session_ttl=10.0, leader=None)


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


def test_errant_transactions_are_detected_and_keep_the_node_out() -> None:
    refused = replace(REPLICATING, io_running=False, last_io_errno=1236,
                      last_io_error="requested GTID 0-1-9 not in the master's binlog")
    assert d(**L2, replica=refused) == Action.MARK_ERRANT
    stuck = decide(replace(BASE, **L2, errant=("0-1-8..0-1-9",)))  # type: ignore[arg-type]
    assert stuck.action == Action.WAIT and not stuck.healthy and "0-1-8..0-1-9" in stuck.reason
    assert d(errant=("0-1-9",), gtid="0-1-9", published="0-1-9") == Action.WAIT  # no candidate


def test_lost_session_while_writable_fences() -> None:
    assert d(session=None, leader=None, read_only=False) == Action.FENCE
    assert d(leader=None, read_only=False) == Action.FENCE


def test_stale_renewal_fences_after_fence_after() -> None:
    assert d(leader="db1", read_only=False, session_age=2.9) == Action.STAY_PRIMARY
    assert d(leader="db1", read_only=False, session_age=3.0) == Action.FENCE


def test_consul_unreachable() -> None:
    # A read-only node just waits; a primary keeps serving only while its lock is surely valid.
    assert d(dcs_ok=False) == Action.WAIT
    assert d(dcs_ok=False, read_only=False, leader="db1", session_age=2.0) == Action.STAY_PRIMARY
    assert d(dcs_ok=False, read_only=False, leader="db1", session_age=3.5) == Action.FENCE


E = dict(published="0-1-10", gtid="0-1-10", voters=("db2", "db3"))


def test_election_drains_then_publishes_then_waits_for_voters() -> None:
    assert d(replica=REPLICATING, drained=False) == Action.DRAIN
    assert d(replica=REPLICATING, drained=True, gtid="0-1-10", published=None) == \
        Action.PUBLISH_POSITION
    waiting = decide(replace(BASE, **E, positions=(("db2", "0-1-9"),)))  # type: ignore[arg-type]
    assert waiting.action == Action.WAIT and "db3" in waiting.reason
    # ... unless the election timeout passed: then the published positions decide
    assert d(**E, positions=(("db2", "0-1-9"),), election_age=5.0) == Action.ACQUIRE_LOCK


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
    assert d(**{**E, "voters": voters}, positions=others) == expected


def test_unreadable_position_is_no_candidate_after_the_timeout() -> None:
    assert d(**E, positions=(("db2", "garbage"), ("db3", "0-1-3")),
             election_age=9.0) == Action.ACQUIRE_LOCK


def test_one_node_left_takes_over_alone() -> None:
    assert d(**{**E, "voters": ()}) == Action.ACQUIRE_LOCK


def test_no_automatic_takeover_from_a_primary_that_ran_asynchronously() -> None:
    # db2, the last primary, acknowledged commits with no synchronous replica: only it has
    # them, so nobody else takes the lock (however far ahead); it may take it back itself.
    blocked = decide(replace(BASE, **{**E, "voters": ()}, async_primary="db2"))
    assert blocked.action == Action.WAIT and "db2" in blocked.reason
    assert "service/<SERVICE_NAME>/async" in blocked.reason
    assert d(**{**E, "voters": ()}, async_primary="db1") == Action.ACQUIRE_LOCK
    assert d(**{**E, "voters": ()}, async_primary=None) == Action.ACQUIRE_LOCK


def test_consul_flapping_never_promotes_without_the_lock() -> None:
    history = [dict(dcs_ok=False), dict(dcs_ok=True, **L2), dict(dcs_ok=False),
               dict(dcs_ok=True, leader=None, session=None), dict(dcs_ok=True, **L2),
               dict(dcs_ok=False, leader="db1", session_age=9.0)]
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
    tie = dict(gtid="0-1-10", published="0-1-10", voters=("db0",),
               positions=(("db0", "0-1-10"),))
    assert d(**tie) == Action.WAIT  # db0 sorts first
    assert d(**tie, handover_to="db1") == Action.ACQUIRE_LOCK  # the requested target
    assert d(leader="db1", promote_in=3.0, handover_to="db1") == Action.PROMOTE
    # the old primary stays out of the election it handed over
    assert d(handing_over=True, published=None) == Action.WAIT


def test_the_new_primary_applies_everything_it_received_before_opening() -> None:
    assert d(leader="db1", replica=REPLICATING, drained=True, relay_pending=True) == Action.WAIT
    assert d(leader="db1", replica=REPLICATING, drained=True) == Action.PROMOTE
