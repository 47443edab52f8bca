"""The whole cluster in one document: `autopilot-mysql list` and GET /cluster.

Gathered from Consul (the members with their service meta, the leader, the acknowledgement
set, pause, the timeline) and from every member's own /status, read concurrently with a short
time-out: a node that does not answer is listed as "unreachable" with what Consul says of it,
and never delays the others. Built on demand (the CLI, or an HTTP worker thread of a node):
the HA loop never waits on it.

The document, in the spirit of Patroni's GET /cluster:

    {"scope": SERVICE_NAME, "topology": "replication" | "galera", "leader": NODE | null,
     "timeline": N, "paused": {by, at, reason} | null,
     "switchover": {from, to, at, by} | null (a pending or scheduled one),
     "members": [{"name", "host", "port", "api_url", "role", "state", "healthy",
                  "writable", "lag", "lag_transactions", "gtid", "in_ack_set",
                  "tags", "consul_check"}]}

`lag` is the replica's own Seconds_Behind_Master; `lag_transactions` the transactions the
primary holds that it does not (its GTID position against the primary's, domain by domain).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import gtid, httpc
from .dcs import Consul
from .model import Member

STATUS_TIMEOUT = 1.0  # seconds a member's /status may take before it counts as unreachable

Fetch = Callable[[str], dict[str, Any] | None]  # a /status URL -> its document (None: no answer)


def fetch_status(url: str) -> dict[str, Any] | None:
    try:
        r = httpc.request("GET", url, timeout=STATUS_TIMEOUT)
        doc = r.json() if r.ok else None
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def transactions_behind(primary: str, mine: str) -> int | None:
    """Transactions `primary` holds beyond `mine`, summed over its domains (None: unknown)."""
    try:
        p, m = gtid.parse(primary), gtid.parse(mine)
    except ValueError:
        return None
    return sum(max(0, g.seqno - (m[d].seqno if d in m else 0)) for d, g in p.items())


def build(service: str, members: Sequence[Member], leader: str | None,
          ack_set: Sequence[str], statuses: Mapping[str, dict[str, Any] | None], *,
          health_port: int, timeline: int, paused: Mapping[str, str] | None,
          topology: str, switchover: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The document from what was gathered (pure: unit-tested)."""
    rows: list[dict[str, Any]] = []
    leader_gtid = ""
    if leader is not None and statuses.get(leader):
        leader_gtid = str(statuses[leader].get("gtid_current_pos") or "")  # type: ignore[union-attr]
    for m in sorted(members, key=lambda m: m.node):
        doc = statuses.get(m.node)
        meta = dict(m.meta)
        tags = {k.removeprefix("tag_"): v for k, v in meta.items() if k.startswith("tag_")}
        row: dict[str, Any] = {
            "name": m.node, "host": m.address, "port": m.port,
            "api_url": f"http://{m.address}:{health_port}/status",
            "role": m.role.value, "state": "unreachable", "healthy": False,
            "writable": False, "lag": None, "lag_transactions": None, "gtid": "",
            "in_ack_set": m.node in ack_set, "tags": tags,
            "consul_check": "passing" if m.passing else "failing"}
        if doc is not None:
            mine = str(doc.get("gtid_current_pos") or "")
            row.update(role=str(doc.get("role") or row["role"]),
                       state=str(doc.get("state") or "unknown"),
                       healthy=bool(doc.get("healthy")), writable=bool(doc.get("writable")),
                       lag=doc.get("lag"), gtid=mine)
            if leader_gtid and m.node != leader and topology != "galera":
                row["lag_transactions"] = transactions_behind(leader_gtid, mine)
            elif m.node == leader:
                row["lag_transactions"] = 0
        rows.append(row)
    pending = {k: v for k, v in (switchover or {}).items() if k != "session"} or None
    return {"scope": service, "topology": topology, "leader": leader, "timeline": timeline,
            "paused": dict(paused) if paused else None, "switchover": pending,
            "members": rows}


def gather(consul: Consul, health_port: int, topology: str,
           fetch: Fetch = fetch_status) -> dict[str, Any]:
    """The document, read now (raises DCSError when Consul does not answer)."""
    _, members = consul.members()
    keys = consul.cluster_state()
    leader = keys.leader.node if keys.leader else None
    ack = [n for n, _ in keys.sync.members] if keys.sync else []
    urls = {m.node: f"http://{m.address}:{health_port}/status" for m in members}
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(urls)))) as pool:
        got = dict(zip(urls, pool.map(fetch, urls.values()), strict=True))
    return build(consul.service_name, members, leader, ack, got, health_port=health_port,
                 timeline=consul.timeline(), paused=keys.pause, topology=topology,
                 switchover=keys.switchover)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


def table(doc: Mapping[str, Any]) -> str:
    """The document as the operator reads it: one line per member, the cluster's state
    above."""
    head = ["Member", "Host", "Role", "State", "Healthy", "Lag (s)", "Lag (trx)", "GTID",
            "Ack", "Tags"]
    rows = [[m["name"], m["host"], m["role"] + (" (leader)" if m["name"] == doc["leader"]
                                                 else ""),
             m["state"], _cell(m["healthy"]), _cell(m["lag"]), _cell(m["lag_transactions"]),
             m["gtid"], _cell(m["in_ack_set"]), _cell(m["tags"])] for m in doc["members"]]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(r: Sequence[Any]) -> str:
        return "|" + "|".join(f" {str(c):<{w}} " for c, w in zip(r, widths, strict=True)) + "|"

    out = [f"+ Cluster: {doc['scope']} ({doc['topology']}, timeline {doc['timeline']}) +",
           line, fmt(head), line, *(fmt(r) for r in rows), line]
    p = doc.get("paused")
    if p:
        out.append(f" Maintenance mode: on (paused by {p.get('by', '?')} at {p.get('at', '?')}"
                   f"{': ' + p['reason'] if p.get('reason') else ''}): no automatic failover, "
                   "mysqld not restarted; `autopilot-mysql resume` ends it")
    sw = doc.get("switchover")
    if sw:
        out.append(f" Switchover pending: {sw.get('from')} -> {sw.get('to') or 'the best replica'}"
                   f"{' at ' + sw['at'] if sw.get('at') else ''}"
                   f"{' (requested by ' + sw['by'] + ')' if sw.get('by') else ''}; "
                   "`autopilot-mysql switchover --cancel` withdraws it")
    if doc["leader"] is None:
        out.append(" No primary: see `autopilot-mysql history` and the nodes' logs; "
                   "`autopilot-mysql failover` says what the election waits for")
    return "\n".join(out)


def history_table(entries: Sequence[Mapping[str, Any]]) -> str:
    head = ["Timeline", "At (UTC)", "Kind", "How", "Node", "Previous", "Position", "Reason"]
    rows = [[_cell(e.get("timeline")), str(e.get("at", "")), str(e.get("kind", "")),
             str(e.get("how", "")),
             str(e.get("node") or e.get("candidate") or e.get("primary") or ""),
             str(e.get("previous") or e.get("from") or ""),
             str(e.get("position") or e.get("gtid") or ""),
             str(e.get("reason") or "")] for e in entries]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join(" ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [head, *rows])


def dump(doc: Any, fmt: str) -> str:
    """`-f json|yaml`: the document as is, for scripts."""
    if fmt == "yaml":
        import yaml
        return str(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)).rstrip()
    return json.dumps(doc, indent=1)


def endpoint(consul: Consul, health_port: int, topology: str) -> Callable[[str], Any]:
    """GET /cluster and /history of a node (api.ClusterDoc), answered from `consul`."""
    def answer(what: str) -> Any:
        return consul.history() if what == "history" else gather(consul, health_port, topology)
    return answer
