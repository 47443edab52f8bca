"""The decision function over many observed states (no I/O: pure values in, decisions out)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from autopilot_mysql.ha import decide
from autopilot_mysql.model import Action, Observation, ProcState, Role

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


def test_first_boot_path_register_wait_session_lock_promote() -> None:
    assert d(registered=False, check_passing=False, session=None) == Action.REGISTER
    assert d(check_passing=False, session=None) == Action.WAIT
    assert d(session=None) == Action.CREATE_SESSION
    assert d() == Action.ACQUIRE_LOCK
    promote = decide(replace(BASE, leader="db1"))
    assert promote.action == Action.PROMOTE and promote.role == Role.PRIMARY
    assert d(leader="db1", read_only=False) == Action.STAY_PRIMARY


def test_another_leader_means_follow_or_fence() -> None:
    follow = decide(replace(BASE, leader="db2"))
    assert follow.action == Action.FOLLOW and follow.role == Role.REPLICA
    assert d(leader="db2", read_only=False) == Action.FENCE


def test_lost_session_while_writable_fences() -> None:
    assert d(session=None, leader=None, read_only=False) == Action.FENCE


def test_stale_renewal_fences_before_half_ttl_passes() -> None:
    assert d(leader="db1", read_only=False, session_age=4.9) == Action.STAY_PRIMARY
    assert d(leader="db1", read_only=False, session_age=5.0) == Action.FENCE


def test_consul_unreachable() -> None:
    # A read-only node just waits; a primary keeps serving only while its lock is surely valid.
    assert d(dcs_ok=False) == Action.WAIT
    assert d(dcs_ok=False, read_only=False, leader="db1", session_age=2.0) == Action.STAY_PRIMARY
    assert d(dcs_ok=False, read_only=False, leader="db1", session_age=6.0) == Action.FENCE


def test_consul_flapping_never_promotes_without_the_lock() -> None:
    history = [dict(dcs_ok=False), dict(dcs_ok=True, leader="db2"), dict(dcs_ok=False),
               dict(dcs_ok=True, leader=None, session=None), dict(dcs_ok=True, leader="db2")]
    for step in history:
        assert d(**step) != Action.PROMOTE


def test_unregistered_writable_node_fences_first() -> None:
    assert d(registered=False, read_only=False, leader="db1") == Action.FENCE
