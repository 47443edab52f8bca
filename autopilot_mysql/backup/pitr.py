"""Point-in-time recovery: the newest snapshot before the point, then the archived
transactions (archive.py) from the snapshot's position up to the point, replayed with
mariadb-binlog into a throwaway server on the restored data.

    plan:     which snapshot, which segments, how far the archive reaches (pure: a dry run
              prints it, and unit tests check it without S3)
    restore:  extract + prepare the snapshot into the target, then per segment: download
              (its SHA-256 checked), keep the transactions after the snapshot and before the
              point, `mariadb-binlog | mariadb` them in; finally set gtid_slave_pos to the last
              transaction applied, so a server started on the target replicates from there

A point is a time (every transaction written before it; the GTID event's timestamp, in whole
seconds, as mariadb-binlog --stop-datetime reads it) or a GTID (every transaction up to and
including it). A gap in the archive, a point past what it holds, or a point before the oldest
snapshot are refused before anything is written; a corrupt segment stops the restore before
it, and the error says how far the target got.
"""

from __future__ import annotations

import calendar
import logging
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import MySQLError, SnapshotError
from ..gtid import Gtid, one, parse, render
from ..mysql import osuser
from ..mysql.server import LocalServer
from . import binlog, snapshot
from .snapshot import chown_tree, extract, throwaway_server
from .store import Manifest, Segment, SnapshotStore

log = logging.getLogger(__name__)
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%SZ",
                "%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    """'2026-11-22 10:15:00' (UTC, as the servers' clocks in the containers) -> Unix time."""
    for fmt in TIME_FORMATS:
        try:
            return float(calendar.timegm(time.strptime(text.strip(), fmt)))
        except ValueError:
            continue
    raise SnapshotError(f"--to-time {text!r} is not a time: write it as "
                        "'2026-11-22 10:15:00' (UTC)")


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


@dataclass(frozen=True)
class Point:
    time: float | None = None  # every transaction written before it
    gtid: Gtid | None = None  # every transaction up to and including it

    def __str__(self) -> str:
        return f"GTID {self.gtid}" if self.gtid else f"{when(self.time or 0)}"

    def includes(self, tx: binlog.Transaction) -> bool:
        if self.gtid is not None:
            return tx.gtid.domain != self.gtid.domain or tx.gtid.seqno <= self.gtid.seqno
        return self.time is not None and tx.timestamp < self.time


def _seq(position: str, domain: int) -> int | None:
    g = parse(position).get(domain)
    return g.seqno if g else None


@dataclass
class Plan:
    snapshot: Manifest
    point: Point
    domain: int
    floor: int  # the snapshot's sequence number in the domain: transactions after it apply
    segments: list[Segment] = field(default_factory=list)
    reaches: str = ""  # how far the archive goes, for messages

    def select(self, txs: Sequence[binlog.Transaction]) -> list[binlog.Transaction]:
        """The transactions of a segment to replay: after the snapshot, up to the point."""
        return [t for t in txs if (t.gtid.domain != self.domain or t.gtid.seqno > self.floor)
                and self.point.includes(t)]

    def text(self) -> str:
        lines = [f"restore to {self.point}:",
                 f"  snapshot {self.snapshot.id} (GTID {self.snapshot.gtid or '(empty)'}, "
                 f"finished {when(self.snapshot.finished_at)}, "
                 f"{self.snapshot.stored_bytes >> 20} MiB stored)"]
        if self.segments:
            first, last = self.segments[0], self.segments[-1]
            lines.append(f"  then {len(self.segments)} archived segment(s) {first.seq}..{last.seq}"
                         f" ({sum(s.size for s in self.segments) >> 10} KiB): transactions "
                         f"{first.first}..{last.last}, written {when(first.first_time)} to "
                         f"{when(last.last_time)}; those after the snapshot and "
                         + ("up to the GTID" if self.point.gtid else "before the time")
                         + " are replayed")
        else:
            lines.append("  no archived transaction is needed: the snapshot is the point")
        lines.append(f"  the archive reaches {self.reaches}")
        return "\n".join(lines)


def make_plan(snapshots: Sequence[Manifest], segments: Sequence[Segment],
              state: dict[str, Any] | None, point: Point) -> Plan:
    """Which snapshot and segments restore `point`; SnapshotError (said why, nothing
    written) when the point cannot be reached."""
    if not snapshots:
        raise SnapshotError("the cluster has no usable snapshot: point-in-time recovery starts "
                            "from one")
    domain = point.gtid.domain if point.gtid else 0
    ordered = sorted(snapshots, key=lambda m: m.id, reverse=True)
    if point.gtid is not None:
        gtid = point.gtid
        fits = [m for m in ordered if (_seq(m.gtid, domain) or 0) <= gtid.seqno]
    else:
        fits = [m for m in ordered if m.finished_at <= (point.time or 0)]
    if not fits:
        oldest = ordered[-1]
        raise SnapshotError(f"{point} is before the oldest snapshot ({oldest.id}, finished "
                            f"{when(oldest.finished_at)}, GTID {oldest.gtid}): nothing can "
                            "restore it")
    m = fits[0]
    floor = _seq(m.gtid, domain) or 0
    state = state or {}
    reaches = (f"{state.get('last') or '(nothing archived)'} (written "
               f"{when(float(state.get('last_time') or 0))}), complete up to "
               f"{when(float(state.get('checked_at') or 0))}")
    plan = Plan(m, point, domain, floor, reaches=reaches)
    if point.gtid is not None and point.gtid.seqno <= floor:
        return plan  # the snapshot is the point
    by_seq: dict[int, list[Segment]] = {}
    for s in segments:
        by_seq.setdefault(s.seq, []).append(s)
    for seq in sorted(by_seq):
        if plan.segments:
            # the chain: the segment that links to the last one taken (a late archiver may
            # have left another with the same number, linked elsewhere)
            nxt = _pick([s for s in by_seq[seq] if s.link == plan.segments[-1].last],
                        by_seq.get(seq + 1, []), state)
            if nxt is None:
                raise _gap(plan, by_seq[seq], point)
        else:
            after = [s for s in by_seq[seq] if one(s.last).seqno > floor]
            if not after:
                continue  # entirely before the snapshot
            nxt = _pick(after, by_seq.get(seq + 1, []), state)
            assert nxt is not None
            first, link = one(nxt.first).seqno, nxt.link
            if first > floor + 1 and (link in ("start", "gap") or one(link).seqno > floor):
                raise _gap(plan, [nxt], point)
        plan.segments.append(nxt)
        if point.gtid is not None and one(nxt.last).seqno >= point.gtid.seqno:
            return plan
        if point.time is not None and nxt.last_time >= point.time:
            return plan
    expected = one(plan.segments[-1].last).seqno + 1 if plan.segments else floor + 1
    if point.gtid is not None and point.gtid.seqno > expected - 1:
        raise SnapshotError(f"the archive reaches only {domain}-*-{expected - 1}: GTID "
                            f"{point.gtid} is not archived (yet). The archive reaches "
                            f"{reaches}")
    if point.time is not None and float(state.get("checked_at") or 0) < point.time:
        raise SnapshotError(f"the archive is complete only up to "
                            f"{when(float(state.get('checked_at') or 0))}: {point} is later. "
                            "Choose an earlier time, or wait for the archiver to catch up")
    return plan


def _pick(candidates: Sequence[Segment], following: Sequence[Segment],
          state: Mapping[str, Any]) -> Segment | None:
    """The one of `candidates` (same number) the archive continues from: the one the next
    segment links to, or the one the state names, or the only one."""
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    linked = [c for c in candidates if any(f.link == c.last for f in following)]
    named = [c for c in candidates if c.key == state.get("key")]
    return (linked or named or list(candidates))[0]


def _gap(plan: Plan, found: Sequence[Segment], point: Point) -> SnapshotError:
    last = plan.segments[-1].last if plan.segments else f"the snapshot's {plan.snapshot.gtid}"
    nxt = min(found, key=lambda s: s.key)
    why = "a recorded gap" if nxt.link == "gap" else f"linked to {nxt.link}"
    return SnapshotError(
        f"the archive has a gap after {last}: segment {nxt.seq} ({nxt.first}..{nxt.last}) "
        f"does not continue it ({why}). {point} cannot be restored across it; the newest "
        f"point before it is {last}. A snapshot taken after the gap restores points after it")


@dataclass(frozen=True)
class Restored:
    summary: str
    transactions: int
    events: int
    position: str
    snapshot_seconds: float  # download, unpack, prepare
    replay_seconds: float  # the throwaway server's start, the segments, the position


def restore(store: SnapshotStore, plan: Plan, target: Path,
            progress: Callable[[str], None] = lambda text: None) -> Restored:
    """Carry out `plan` into the empty or new directory `target`. On a corrupt segment the
    target is left at the last transaction applied and SnapshotError says which one."""
    if target.exists() and any(target.iterdir()):
        raise SnapshotError(f"{target} is not empty; restore into a new or empty directory")
    progress(f"restoring snapshot {plan.snapshot.id}")
    t0 = time.monotonic()
    extract(store, plan.snapshot, target)
    chown_tree(target)
    t1 = time.monotonic()
    done: dict[str, Any] = {"last": None, "transactions": 0, "events": 0, "error": ""}

    def replay(sock: Path) -> None:
        srv = LocalServer(sock, connect_timeout=2, read_timeout=None)
        try:
            for i, seg in enumerate(plan.segments):
                progress(f"segment {i + 1}/{len(plan.segments)}: {seg.first}..{seg.last}")
                try:
                    blob = store.get_segment(seg)
                except SnapshotError as exc:
                    done["error"] = str(exc)
                    break
                header, txs = binlog.read_segment(blob)
                keep = plan.select(txs)
                if keep:
                    _apply(sock, header.raw + b"".join(blob[t.start:t.end] for t in keep))
                    done["last"] = keep[-1].gtid
                    done["transactions"] += len(keep)
                    done["events"] += sum(t.events for t in keep)
            position = _position(plan.snapshot.gtid, done["last"])
            srv.execute("SET GLOBAL gtid_slave_pos = %s", (position,))
            done["position"] = position
        except MySQLError as exc:
            raise SnapshotError(f"the replay failed: {exc}") from exc
        finally:
            srv.close()

    throwaway_server(target, replay, timeout=600)
    summary = (f"restored snapshot {plan.snapshot.id}, then {done['transactions']} archived "
               f"transaction(s) ({done['events']} events): GTID position "
               f"{done.get('position') or '(empty)'}")
    if done["error"]:
        raise SnapshotError(f"the restore stopped before a corrupt or missing segment "
                            f"({done['error']}); {target} holds {summary}, short of {plan.point}")
    return Restored(summary, done["transactions"], done["events"], str(done["position"]),
                    t1 - t0, time.monotonic() - t1)


def _apply(sock: Path, blob: bytes) -> None:
    """mariadb-binlog | mariadb, from a temporary file (a segment is at most a few MiB)."""
    with tempfile.NamedTemporaryFile(prefix="apm-pitr-", suffix=".binlog") as f:
        f.write(blob)
        f.flush()
        dump = subprocess.Popen(["mariadb-binlog", f.name], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert dump.stdout is not None
        client = subprocess.run(["mariadb", f"--socket={sock}",
                                 f"--user={osuser.admin_user()}",
                                 "--binary-mode", "--batch"], stdin=dump.stdout,
                                capture_output=True, text=True)
        dump.stdout.close()
        err = dump.stderr.read().decode(errors="replace") if dump.stderr else ""
        rc = dump.wait()
        if rc != 0 or client.returncode != 0:
            raise MySQLError(f"mariadb-binlog exit {rc}, mariadb exit {client.returncode}: "
                             f"{(err + client.stderr).strip()[-600:]}")


def _position(snapshot_gtid: str, last: Gtid | None) -> str:
    """The snapshot's GTID position with the last applied transaction's domain moved on."""
    parts = parse(snapshot_gtid)
    if last is not None:
        parts[last.domain] = last
    return render(parts)



def snapshot_for_new_cluster(restored: Path, position: str, store: SnapshotStore,
                             node: str) -> Manifest:
    """A snapshot of the restored directory in `store` (the new cluster's prefix), taken by
    our own pipeline on a throwaway server whose binary log starts at `position`: the new
    cluster's first node restores it and replicates on from there, as from any snapshot."""
    out: list[Manifest] = []
    with tempfile.TemporaryDirectory(prefix="apm-pitr-") as tmp:
        cnf = Path(tmp) / "my.cnf"
        cnf.write_text(f"[mariadbd]\ndatadir={restored}\n")

        def take(sock: Path) -> None:
            srv = LocalServer(sock, connect_timeout=2, read_timeout=60)
            try:
                srv.execute("RESET MASTER")
                if position:
                    srv.execute("SET GLOBAL gtid_binlog_state = %s", (position,))
            except MySQLError as exc:
                raise SnapshotError(f"cannot set the restored server's position: {exc}") \
                    from exc
            finally:
                srv.close()
            out.append(snapshot.take(store, node=node, role="primary", primary=node,
                                     primary_binlog="", cnf=cnf, socket_path=sock,
                                     compression_level=3))

        throwaway_server(restored, take, timeout=600, log_bin=True)
    m = out[0]
    if m.gtid != position:
        store.delete(m.id)
        raise SnapshotError(f"the new cluster's snapshot holds GTID {m.gtid!r}, not the "
                            f"restored position {position!r}: not published")
    return m
