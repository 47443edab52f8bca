"""Defect 11: one malformed value in Consul must never crash every supervisor at once. Every
key is parsed by keys.parse; what is not what it should be is skipped and named."""

from __future__ import annotations

import json

import pytest

from autopilot_mysql import keys
from autopilot_mysql.election import Handover, Published

N = keys.Names("mysql")


def item(key: str, value: object, session: str = "", index: int = 7) -> dict[str, object]:
    raw = value if isinstance(value, (str, bytes)) else json.dumps(value)
    return {"Key": key, "Value": raw.encode() if isinstance(raw, str) else raw,
            "Session": session, "ModifyIndex": index}


GOOD = [
    item(N.leader, {"node": "db1", "address": "10.0.0.1", "gtid": "0-1-5"}, session="s1"),
    item(N.positions + "db2", {"gtid": "0-1-5", "data": "d2", "term": 42}, session="s2"),
    item(N.positions + "db3", {"gtid": "0-1-4", "data": "d3"}, session="s3"),  # no term
    item(N.sync, {"primary": "db1", "primary_data": "d1", "members": {"db2": "d2"},
                  "synced": True, "hwm": "0-1-4"}, index=42),
    item(N.heartbeat, {"node": "db1", "n": 9, "lease": 2.0}),
    item(N.handover, {"from": "db0", "gtid": "0-1-3", "to": "db1", "term": 42}, index=43),
    item(N.switchover, {"from": "db1", "to": "db2", "session": "s1"}),
    item(N.members + "db2", {"server_id": "2", "data": "d2", "address": "10.0.0.2"}),
]


def test_every_key_parses() -> None:
    k = keys.parse(N, GOOD)
    assert k.leader is not None and (k.leader.node, k.leader.session) == ("db1", "s1")
    assert k.positions == {"db2": Published("db2", "0-1-5", "d2", term=42),
                           "db3": Published("db3", "0-1-4", "d3", term=-1)}  # of no term
    assert k.sync is not None and k.sync.members == (("db2", "d2"),) and k.sync.index == 42
    assert k.heartbeat is not None and (k.heartbeat.n, k.heartbeat.lease) == (9, 2.0)
    assert k.handover == Handover("db0", "0-1-3", "db1", term=42, index=43)
    assert k.switchover == {"from": "db1", "to": "db2", "session": "s1"}
    assert k.members["db2"]["address"] == "10.0.0.2" and not k.problems


@pytest.mark.parametrize("bad", ["1", "[]", "null", "{", '"text"', '{"node": []}', "\xff"])
@pytest.mark.parametrize("key", [N.positions + "db2", N.sync, N.heartbeat, N.handover,
                                 N.switchover, N.forced, N.members + "db2"])
def test_a_malformed_value_is_skipped_and_named(key: str, bad: str) -> None:
    items = [i for i in GOOD if i["Key"] != key] + [item(key, bad, session="s9")]
    k = keys.parse(N, items)
    assert any(key in p and "consul kv delete" in p for p in k.problems), k.problems
    assert k.leader is not None  # the rest still parses


@pytest.mark.parametrize("bad", ["1", "[]", "{", '{"node": "db1"}'])
def test_a_held_but_unreadable_leader_key_is_nobody_free_to_take(bad: str) -> None:
    k = keys.parse(N, [item(N.leader, bad, session="s1")])
    assert k.leader is None and k.leader_unreadable and k.problems
    released = keys.parse(N, [item(N.leader, bad)])  # no session: the key is simply free
    assert released.leader is None and not released.leader_unreadable


@pytest.mark.parametrize("term", ["42", True, 4.2, None])
def test_a_handover_without_an_integer_term_allows_no_take_over(term: object) -> None:
    """election.I10 needs the term the handover was recorded in; anything else (an older
    version's record, a hand edit) parses with none, and an election decides instead."""
    doc = {"from": "db0", "gtid": "0-1-3", "to": "db1", "term": term}
    k = keys.parse(N, [item(N.handover, doc)])
    assert k.handover is not None and k.handover.term == -1 and not k.problems
