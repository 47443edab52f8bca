"""`autopilot-mysql list` and GET /cluster: the document built from Consul's members and each
node's /status, its table, and the transactions a replica is behind."""

from __future__ import annotations

import json

import yaml

from autopilot_mysql import clusterview
from autopilot_mysql.keys import Names, parse
from autopilot_mysql.model import Member


def member(node: str, role: str, passing: bool = True, **meta: str) -> Member:
    return Member(node=node, address=f"10.0.0.{node[-1]}", port=3306, service_id=f"mysql-{node}",
                  passing=passing, tags=(role,), meta=tuple(sorted(meta.items())))


def status(role: str, gtid: str, lag: int | None = None) -> dict[str, object]:
    return {"role": role, "state": "running", "healthy": True, "writable": role == "primary",
            "lag": lag, "gtid_current_pos": gtid}


def test_transactions_behind_counts_every_domain() -> None:
    assert clusterview.transactions_behind("0-1-100", "0-1-97") == 3
    assert clusterview.transactions_behind("0-1-100,1-2-5", "0-1-100") == 5
    assert clusterview.transactions_behind("0-1-100", "0-1-100,1-2-5") == 0
    assert clusterview.transactions_behind("0-1-100", "") == 100
    assert clusterview.transactions_behind("0-1-100", "nonsense") is None


def test_the_document_and_its_table() -> None:
    members = [member("db1", "primary"), member("db2", "replica", tag_nofailover="true"),
               member("db3", "replica", passing=False)]
    statuses = {"db1": status("primary", "0-1-50"), "db2": status("replica", "0-1-48", 1),
                "db3": None}
    doc = clusterview.build("mysql", members, "db1", ["db2"], statuses, health_port=9200,
                            timeline=4, paused=None, topology="replication")
    rows = {m["name"]: m for m in doc["members"]}
    assert doc["leader"] == "db1" and doc["timeline"] == 4 and doc["paused"] is None
    assert rows["db1"]["lag_transactions"] == 0 and rows["db1"]["writable"] is True
    assert rows["db2"]["lag_transactions"] == 2 and rows["db2"]["lag"] == 1
    assert rows["db2"]["in_ack_set"] is True and rows["db2"]["tags"] == {"nofailover": "true"}
    # No answer from db3: what Consul says of it, never a guess.
    assert rows["db3"]["state"] == "unreachable" and rows["db3"]["consul_check"] == "failing"
    assert rows["db3"]["lag_transactions"] is None and rows["db3"]["role"] == "replica"
    assert rows["db1"]["api_url"] == "http://10.0.0.1:9200/status"
    text = clusterview.table(doc)
    assert "Cluster: mysql (replication, timeline 4)" in text
    line = next(ln for ln in text.splitlines() if "| db2 " in ln)
    assert "replica" in line and "0-1-48" in line and "nofailover=true" in line
    assert "primary (leader)" in text and "Maintenance" not in text
    # -f json and -f yaml hold the same document.
    assert json.loads(clusterview.dump(doc, "json")) == doc
    assert yaml.safe_load(clusterview.dump(doc, "yaml")) == doc
    paused = clusterview.build("mysql", members, None, [], statuses, health_port=9200,
                               timeline=4, paused={"by": "ops@h", "at": "t", "reason": "upgrade"},
                               topology="replication")
    text = clusterview.table(paused)
    assert "Maintenance mode: on (paused by ops@h at t: upgrade)" in text
    assert "No primary" in text


def test_history_table_names_each_promotion() -> None:
    entries = [{"kind": "promoted", "at": "2026-12-03T10:00:00Z", "node": "db2",
                "previous": "db1", "position": "0-1-9", "timeline": 2, "how": "election",
                "reason": "db1 lost its lock"},
               {"kind": "forced-failover-requested", "at": "2026-12-03T10:01:00Z",
                "candidate": "db3", "reason": "quorum lost"}]
    lines = clusterview.history_table(entries).splitlines()
    assert lines[0].split()[:3] == ["Timeline", "At", "(UTC)"]
    assert lines[1].split()[:6] == ["2", "2026-12-03T10:00:00Z", "promoted", "election", "db2",
                                    "db1"]
    assert "0-1-9" in lines[1]
    assert "db3" in lines[2] and "quorum lost" in lines[2]


def test_the_pause_key_is_parsed_and_an_unreadable_one_still_pauses() -> None:
    n = Names("mysql")
    got = parse(n, [{"Key": n.pause, "Value": b'{"by": "ops", "at": "t", "reason": "r"}'}])
    assert got.pause == {"by": "ops", "at": "t", "reason": "r"}
    got = parse(n, [{"Key": n.pause, "Value": b"yes please"}])
    assert got.pause is not None and "unreadable" in got.pause["reason"]
    assert parse(n, []).pause is None
