"""Failsafe mode's rules (failsafe.py): who confirms a primary cut off from Consul, and what a
request must carry. The round itself runs against real nodes in the integration tests."""

from __future__ import annotations

import json
import time

from autopilot_mysql import failsafe
from autopilot_mysql.election import GRACE_MARGIN

SECRET = "repl-secret"


def request(primary: str = "db1", lease: float = 2.0, at: float | None = None) -> bytes:
    return json.dumps({"primary": primary, "lease": lease,
                       "at": time.time() if at is None else at}).encode()


def test_a_member_confirms_only_in_a_shared_consul_outage_and_for_the_primary_it_knew() -> None:
    req = failsafe.Request("db1", 2.0, time.time())
    ok, why = failsafe.answer(req, me="db2", consul_ok=False, last_leader="db1")
    assert ok and f"{2.0 + GRACE_MARGIN:.1f}s" in why
    # It reaches Consul: not an outage; the others must stay free to elect.
    assert not failsafe.answer(req, me="db2", consul_ok=True, last_leader="db1")[0]
    # It knew another primary, or none.
    assert not failsafe.answer(req, me="db2", consul_ok=False, last_leader="db3")[0]
    assert not failsafe.answer(req, me="db2", consul_ok=False, last_leader=None)[0]
    assert not failsafe.answer(req, me="db1", consul_ok=False, last_leader="db1")[0]


def test_requests_are_signed_with_the_replication_password_and_fresh() -> None:
    body = request()
    assert isinstance(failsafe.parse(SECRET, body, failsafe.sign(SECRET, body), time.time()),
                      failsafe.Request)
    assert "signature" in str(failsafe.parse(SECRET, body, failsafe.sign("other", body),
                                             time.time()))
    old = request(at=time.time() - 600)
    assert "stale" in str(failsafe.parse(SECRET, old, failsafe.sign(SECRET, old), time.time()))
    silly = request(lease=3600)
    assert "implausible" in str(failsafe.parse(SECRET, silly, failsafe.sign(SECRET, silly),
                                               time.time()))
    assert "malformed" in str(failsafe.parse(SECRET, b"[]", failsafe.sign(SECRET, b"[]"),
                                             time.time()))


def test_a_promise_lasts_the_asked_lease_and_only_grows() -> None:
    p = failsafe.Promise()
    assert p.left()[0] <= 0
    p.give("db1", 3.0)
    p.give("db1", 1.0)  # a shorter one never shortens what was promised
    left, to = p.left()
    assert 2.5 < left <= 3.0 and to == "db1"
