"""The cluster's keys in Consul: their names, their documents, and one parser for all of them.

Everything under service/<SERVICE_NAME>/ is read in one recursive read per cycle and parsed
here. A value that is not what it should be (an operator's typo, another tool, a half-written
upgrade) is skipped and named in `problems`, never a crash: one malformed key must not stop
every supervisor of the cluster at once. The leader key is the exception that matters: held by
a session but unreadable, it still means "someone holds the lock" (`leader_unreadable`), so
nobody fights over it.

    leader            {node, address, gtid}        the lock (session)      election.I1
    positions/<node>  {gtid, data, can_apply, term, primary} election (session)  election.I5
    sync              {primary, primary_data, members, synced, hwm}        election.I2-I4
    heartbeat         {node, n, lease}             the primary's proof of the lock, each cycle
                                                   (service/<name>-heartbeat: not watched)
    handover          {from, gtid, to, term}       a switchover's fenced position  I10
    switchover        {from, to, session, at, by}  a pending switchover request (at: scheduled)
    forced            {candidate, by, at, reason}  an operator's forced failover  election.I7
    pause             {by, at, reason}             maintenance mode (autopilot-mysql pause)
    initdb            {state, by, at, ...}         the initdb scripts ran (initdb.py)
    reinit/<node>     {by, at, reason}             re-provision that replica (autopilot-mysql
                                                   reinit); deleted by it once done
    members/<node>    {server_id, data, address}   every node that ever joined (durable)
    config            {LOOP_WAIT, SESSION_TTL, SEMI_SYNC_TIMEOUT, FAILSAFE}  shared settings
    galera/cluster    {uuid, seqno, epoch, by, forced}  TOPOLOGY=galera: the record   galera.G1
    galera/state/<n>  {state, uuid, seqno, data}   each node's census document     galera.G2
    galera/force      {node, by, at, reason}       an operator's forced bootstrap
    galera/joining    {node}                       one join at a time (session)

Outside the prefix (never read by the HA loop's cycle, never waking its watch):

    service/<name>-history/<time>-<kind>  {kind, at, ...}   every promotion, failover and
                                          forced decision, for people (`autopilot-mysql
                                          history`, GET /history); the newest HISTORY_KEEP
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .election import Handover, Published, SyncState
from .galera import CensusDoc, Record


class Names:
    """Every key of one service, in one place (the ancestor's snapshot unlock never worked
    because a key's name was written twice)."""

    def __init__(self, service: str) -> None:
        self.prefix = f"service/{service}/"
        self.leader = self.prefix + "leader"
        self.positions = self.prefix + "positions/"
        self.sync = self.prefix + "sync"
        # Outside the prefix the keys' watch blocks on: the primary writes it every cycle,
        # and it would wake every node's watch (the primary's own included) as often. Each
        # cycle's read (dcs.Consul.cluster_state) takes it with the prefix, in one request.
        self.heartbeat = f"service/{service}-heartbeat"
        self.handover = self.prefix + "handover"
        self.switchover = self.prefix + "switchover"
        self.forced = self.prefix + "forced"
        self.members = self.prefix + "members/"
        # Outside the prefix: every cycle reads the prefix whole, and the history only grows.
        self.history = f"service/{service}-history/"
        self.history_legacy = self.prefix + "history/"  # where releases before 0.2 wrote it
        self.pause = self.prefix + "pause"
        self.reinit = self.prefix + "reinit/"
        self.initdb = self.prefix + "initdb"
        self.config = self.prefix + "config"
        self.galera_cluster = self.prefix + "galera/cluster"
        self.galera_state = self.prefix + "galera/state/"
        self.galera_force = self.prefix + "galera/force"
        self.galera_joining = self.prefix + "galera/joining"
        self.server_id_counter = self.prefix + "server-id-counter"
        # Outside the prefix the HA loop reads and watches: snapshot progress never wakes it.
        self.snapshot_lock = f"service/{service}-snapshots/lock"
        self.snapshot_pointer = f"service/{service}-snapshots/latest"
        # one key per snapshot found unrestorable ({why, by, at}); retention removes it
        self.snapshot_bad = f"service/{service}-snapshots/bad/"
        # The binary-log archive (backup/archive.py): one archiver at a time, and how far the
        # archive reaches; outside the watched prefix too (written every few seconds).
        self.archive_lock = f"service/{service}-binlogs/lock"
        self.archive_state = f"service/{service}-binlogs/state"


@dataclass(frozen=True)
class LeaderInfo:
    node: str
    address: str
    gtid: str  # the new primary's position when it took the lock
    session: str = ""


@dataclass(frozen=True)
class Heartbeat:
    node: str
    n: int
    lease: float  # the writer's lease: it fences when no heartbeat succeeded for this long
    index: int = 0


@dataclass(frozen=True)
class ClusterKeys:
    leader: LeaderInfo | None = None
    leader_unreadable: bool = False
    positions: dict[str, Published] = field(default_factory=dict)
    sync: SyncState | None = None
    heartbeat: Heartbeat | None = None
    handover: Handover | None = None
    switchover: dict[str, str] | None = None  # {"from", "to", "session"}
    forced: dict[str, str] | None = None  # {"candidate", "by", "at", "reason"}
    members: dict[str, dict[str, str]] = field(default_factory=dict)
    config: dict[str, str] | None = None  # the shared settings (validated by the reader)
    config_index: int = 0
    problems: tuple[str, ...] = ()
    galera: Record | None = None
    census: dict[str, CensusDoc] = field(default_factory=dict)
    galera_force: dict[str, str] | None = None
    galera_joining: str | None = None  # the node holding the join lock
    pause: dict[str, str] | None = None  # maintenance mode {by, at, reason}: no failover
    reinit: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> {by, at, reason}


def _str_fields(doc: Any, required: Iterable[str], optional: Iterable[str] = ()
                ) -> dict[str, str] | None:
    if not isinstance(doc, dict):
        return None
    out: dict[str, str] = {}
    for k in required:
        v = doc.get(k)
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            return None
        out[k] = str(v)
    for k in optional:
        v = doc.get(k)
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            out[k] = str(v)
    return out


def _sync(doc: Any, index: int) -> SyncState | None:
    base = _str_fields(doc, ("primary",), ("primary_data", "hwm"))
    if base is None:
        return None
    members = doc.get("members", {})
    if not isinstance(members, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in members.items()):
        return None
    synced = doc.get("synced", False)
    if not isinstance(synced, bool):
        return None
    return SyncState(primary=base["primary"], primary_data=base.get("primary_data", ""),
                     members=tuple(sorted(members.items())), synced=synced,
                     hwm=base.get("hwm", ""), index=index)


def parse(names: Names, items: Iterable[Mapping[str, Any]]) -> ClusterKeys:
    """One recursive read of the service's prefix (Consul's KV list, values base64 or raw)."""
    leader, unreadable, sync, hb, handover = None, False, None, None, None
    switchover = forced = config = pause = None
    reinit: dict[str, dict[str, str]] = {}
    config_index = 0
    positions: dict[str, Published] = {}
    members: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    record: Record | None = None
    census: dict[str, CensusDoc] = {}
    gforce: dict[str, str] | None = None
    joining: str | None = None

    def bad(key: str, raw: str, what: str) -> None:
        problems.append(f"ignoring the Consul key {key}: {what} ({raw[:80]!r}); fix or delete "
                        f"it (consul kv delete {key})")

    for item in items:
        key = str(item.get("Key", ""))
        raw_value = item.get("Value")
        if isinstance(raw_value, bytes):
            raw = raw_value.decode(errors="replace")
        else:
            raw = str(raw_value or "")
        session = str(item.get("Session") or "")
        index = int(item.get("ModifyIndex") or 0)
        if not raw:
            if key == names.leader and session:
                unreadable = True
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if key == names.leader:
            if not session:
                continue  # released: the key is free
            f = _str_fields(doc, ("node", "address"), ("gtid",))
            if f is None:
                unreadable = True
                bad(key, raw, "the lock is held, but its value is not {node, address}")
            else:
                leader = LeaderInfo(f["node"], f["address"], f.get("gtid", ""), session)
        elif key.startswith(names.positions):
            if not session:
                continue  # a position outlives no session
            f = _str_fields(doc, ("gtid",), ("data",))
            node = key[len(names.positions):]
            if f is None or not node:
                bad(key, raw, "not an election position {gtid}")
                continue
            can = doc.get("can_apply", True) if isinstance(doc, dict) else True
            term = doc.get("term", -1) if isinstance(doc, dict) else -1
            positions[node] = Published(node, f["gtid"], f.get("data", ""),
                                        can_apply=can is not False,
                                        term=term if isinstance(term, int) else -1,
                                        primary=isinstance(doc, dict)
                                        and doc.get("primary") is True)
        elif key == names.sync:
            sync = _sync(doc, index)
            if sync is None:
                bad(key, raw, "not an acknowledgement set {primary, members, synced}")
        elif key == names.heartbeat:
            f = _str_fields(doc, ("node", "n", "lease"))
            try:
                hb = Heartbeat(f["node"], int(f["n"]), float(f["lease"]), index) if f else None
            except ValueError:
                hb = None
            if hb is None:
                bad(key, raw, "not a heartbeat {node, n, lease}")
        elif key == names.handover:
            f = _str_fields(doc, ("from", "gtid"), ("to",))
            if f is None:
                bad(key, raw, "not a handover record {from, gtid, to}")
            else:
                term = doc.get("term", -1)
                handover = Handover(f["from"], f["gtid"], f.get("to", ""),
                                    term if isinstance(term, int) and not isinstance(
                                        term, bool) else -1, index)
        elif key == names.switchover:
            switchover = _str_fields(doc, ("from",), ("to", "session", "at", "by"))
            if switchover is None:
                bad(key, raw, "not a switchover request {from, to}")
        elif key == names.forced:
            forced = _str_fields(doc, ("candidate",), ("by", "at", "reason"))
            if forced is None:
                bad(key, raw, "not a forced failover {candidate, by, at, reason}")
        elif key == names.pause:
            pause = _str_fields(doc, (), ("by", "at", "reason"))
            if pause is None:  # still paused: an operator meant it, whatever the value says
                pause = {"by": "?", "at": "?", "reason": f"unreadable pause key {raw[:40]!r}"}
        elif key == names.config:
            if isinstance(doc, dict) and all(isinstance(v, (str, int, float, bool))
                                             for v in doc.values()):
                config = {str(k): (str(v).lower() if isinstance(v, bool) else str(v))
                          for k, v in doc.items()}
                config_index = index
            else:
                bad(key, raw, "not the cluster settings {LOOP_WAIT, SESSION_TTL, ...}")
        elif key.startswith(names.members):
            f = _str_fields(doc, ("address",), ("server_id", "data"))
            if f is None:
                bad(key, raw, "not a member record")
            else:
                members[key[len(names.members):]] = f
        elif key == names.galera_cluster:
            f = _str_fields(doc, ("uuid", "seqno", "epoch", "by"), ("forced",))
            try:
                record = Record(f["uuid"], int(f["seqno"]), int(f["epoch"]), f["by"],
                                f.get("forced") == "True", index) if f else None
            except ValueError:
                record = None
            if record is None:
                bad(key, raw, "not a Galera cluster record {uuid, seqno, epoch, by}")
        elif key.startswith(names.galera_state):
            node = key[len(names.galera_state):]
            f = _str_fields(doc, ("state",), ("uuid", "seqno", "data"))
            try:
                cd = CensusDoc(node, f["state"], f.get("uuid", ""), int(f.get("seqno", -1)),
                               f.get("data", "none"), index) if f and node else None
            except ValueError:
                cd = None
            if cd is None:
                bad(key, raw, "not a Galera census document {state, uuid, seqno, data}")
            else:
                census[node] = cd
        elif key == names.galera_joining:
            f = _str_fields(doc, ("node",))
            if session:
                joining = f["node"] if f else "?"
        elif key.startswith(names.reinit):
            f = _str_fields(doc, (), ("by", "at", "reason"))
            if f is None or not key[len(names.reinit):]:
                bad(key, raw, "not a reinit request {by, at, reason}")
            else:
                reinit[key[len(names.reinit):]] = f
        elif key == names.galera_force:
            gforce = _str_fields(doc, ("node",), ("by", "at", "reason"))
            if gforce is None:
                bad(key, raw, "not a forced bootstrap {node, by, at, reason}")
    return ClusterKeys(leader, unreadable, positions, sync, hb, handover, switchover, forced,
                       members, config, config_index, tuple(problems), record, census, gforce,
                       joining, pause, reinit)


def txn_set(key: str, doc: Mapping[str, Any] | str) -> dict[str, Any]:
    value = doc if isinstance(doc, str) else json.dumps(doc, sort_keys=True)
    return {"KV": {"Verb": "set", "Key": key, "Value": base64.b64encode(value.encode()).decode()}}


def txn_check_session(key: str, session: str) -> dict[str, Any]:
    return {"KV": {"Verb": "check-session", "Key": key, "Session": session}}


def txn_check_index(key: str, index: int) -> dict[str, Any]:
    """The key is unchanged since it was read at `index` (0: it still does not exist)."""
    if index == 0:
        return {"KV": {"Verb": "check-not-exists", "Key": key}}
    return {"KV": {"Verb": "check-index", "Key": key, "Index": index}}


def txn_lock(key: str, doc: Mapping[str, Any], session: str) -> dict[str, Any]:
    op = txn_set(key, doc)
    op["KV"].update(Verb="lock", Session=session)
    return op


def txn_unlock(key: str, session: str) -> dict[str, Any]:
    """Release the lock `session` holds on `key` (its value emptied: a free leader key)."""
    return {"KV": {"Verb": "unlock", "Key": key, "Session": session, "Value": ""}}


def txn_delete(key: str) -> dict[str, Any]:
    return {"KV": {"Verb": "delete", "Key": key}}


def paused_by(pause: Mapping[str, str] | None) -> str:
    """The maintenance mode as one phrase for the operator ("" when off)."""
    if pause is None:
        return ""
    why = pause.get("reason", "")
    return (f"paused by {pause.get('by') or '?'} at {pause.get('at') or '?'}"
            f"{': ' + why if why else ''}")
