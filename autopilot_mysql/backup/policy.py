"""When to take a snapshot, where, and which ones to delete: pure functions of what the
scheduler observed, unit-tested without S3 or Consul."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..model import Member, NodeStatus, Role
from .store import Manifest

DAY = 86400.0


def binlog_index(name: str) -> int | None:
    m = re.search(r"\.(\d+)$", name or "")
    return int(m.group(1)) if m else None


def snapshot_due(pointer: Mapping[str, Any] | None, *, now: float, interval: float,
                 rotations: int, primary: str, primary_binlog: str,
                 archive_gap_at: float = 0.0) -> str | None:
    """Why a snapshot is due now, or None. `pointer` is the cluster's latest good snapshot;
    `archive_gap_at`, when the binary-log archive last recorded a gap (a snapshot after it
    closes it)."""
    if pointer is None:
        return "the cluster has no snapshot yet"
    if pointer.get("bad"):
        return (f"the latest snapshot {pointer.get('id')} cannot be restored "
                f"({pointer['bad']}): it is replaced at once")
    if archive_gap_at > float(pointer.get("finished_at", 0)):
        return ("the binary-log archive has a gap since the latest snapshot: a new snapshot "
                "closes it for point-in-time recovery")
    age = now - float(pointer.get("finished_at", 0))
    if interval and age >= interval:
        return f"the latest snapshot is {age / 3600:.1f}h old (SNAPSHOT_INTERVAL {interval:g}s)"
    if rotations and pointer.get("primary") == primary:
        before, current = binlog_index(str(pointer.get("binlog_file", ""))), \
            binlog_index(primary_binlog)
        if before is not None and current is not None and current - before >= rotations:
            return (f"the primary's binary log rotated {current - before} times since the "
                    f"latest snapshot (SNAPSHOT_BINLOG_ROTATIONS {rotations})")
    return None


def eligible(status: NodeStatus, members: Sequence[Member], max_lag: int,
             primary_may: bool = True) -> str | None:
    """Why this node may take the cluster's snapshot, or None: a healthy replica that keeps up;
    the primary only when no other member passes its health check, and only if
    `primary_may` (a Galera writer never: mariabackup desyncs the node while it blocks DDL,
    and a writer that is not Synced gives up the writer role)."""
    if not status.healthy:
        return None
    if status.role == Role.REPLICA and status.replicating and status.lag is not None \
            and status.lag <= max_lag:
        return "a healthy replica"
    if status.role == Role.PRIMARY and primary_may:
        others = [m for m in members if m.node != status.node and m.passing]
        if not others:
            return "the primary, with no healthy replica to take it"
    return None


def to_delete(manifests: Sequence[Manifest], *, now: float, keep: int, keep_days: float,
              latest: str | None) -> list[Manifest]:
    """Snapshots past retention: not among the newest `keep`, older than `keep_days`, and
    never the one the cluster's pointer names (nor the only one)."""
    ordered = sorted(manifests, key=lambda m: m.id, reverse=True)
    if len(ordered) <= 1:
        return []
    out = []
    for i, m in enumerate(ordered):
        if i < keep or m.id == latest:
            continue
        if now - m.finished_at < keep_days * DAY:
            continue
        out.append(m)
    return out
