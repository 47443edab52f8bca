"""The binary-log archive: every transaction of the cluster, in the bucket beside the
snapshots (`<prefix>/binlogs/`), for point-in-time recovery (pitr.py).

One node archives at a time: the holder of a Consul lock (a session tied to its serfHealth,
as the snapshot lock), chosen as the snapshot taker is (policy.eligible: a healthy replica
that keeps up, the primary only when it has none). It archives its *own* binary log: with
log_slave_updates every node's log holds the cluster's transactions under the primary's GTIDs,
so the archive follows failovers by GTID, whoever archives. On Galera (wsrep_gtid_mode, one
domain for the cluster's write-sets) every member's log holds the same GTIDs too: a Synced
reader archives, never the writer. Only the cluster's GTID domain (DOMAIN) is archived.

Every BINLOG_ARCHIVE_INTERVAL seconds it cuts the whole transactions written since the last
archived one into a segment (binlog.py: a binary log file of its own) linked to the GTID
archived before it, stores it, then moves the archive's state in Consul in a transaction that
checks it still holds the lock and that nobody moved the state since it read it. So the chain
has no duplicate (a late archiver's state write fails; a restore follows the links) and no gap
that is not recorded: a new archiver starts right after the state's last GTID, found in its
own log; when its log does not hold that GTID (purged, or it diverged from the archive), the
gap is recorded in the state, the next segment's link says "gap", it is reported, and it makes
a snapshot due, which closes it (a restore never crosses a gap).

The data at risk if the whole cluster is lost (RPO) is the interval plus the archiver's
replication lag; `checked_at` in the state is the time up to which the archive is known
complete, shown by `/status` of the archiving node, `backup list` and every node's /metrics.
"""

from __future__ import annotations

import logging
import mmap
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import SnapshotSettings
from ..dcs import Consul
from ..exceptions import AutopilotError, DCSError, MySQLError
from ..gtid import Gtid, one, parse
from ..model import Member, NodeStatus
from ..mysql.server import LocalServer
from . import binlog, policy
from .store import Segment, SnapshotStore

log = logging.getLogger(__name__)
# The cluster's transactions, in both topologies (my.cnf's gtid_domain_id; Galera's
# wsrep_gtid_domain_id): the archive holds them only, never a node's own local domain.
DOMAIN = 0
SEGMENT_MAX = 16 << 20  # bytes of transactions per segment (a bigger transaction goes whole)
RETENTION_EVERY = 300.0
MAX_GAPS = 20  # the newest gaps kept in the state


@dataclass(frozen=True)
class Cursor:
    file: str  # a binary log file of this node
    offset: int  # where the next transaction to archive starts, at the earliest
    last: Gtid | None  # the last archived transaction (None: the archive is empty)
    gap: bool = False  # the next segment is the first after a recorded gap


@contextmanager
def _mapped(path: Path) -> Iterator[bytes]:
    """A binary log file mapped read-only (no copy in memory, however large)."""
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            yield b""
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            yield m  # type: ignore[misc]


class BinlogArchiver:
    def __init__(self, cfg: SnapshotSettings, store: SnapshotStore, consul: Consul, *,
                 node: str, datadir: Path, socket: Path, status: Callable[[], NodeStatus],
                 members: Callable[[], tuple[Member, ...]], max_lag: int,
                 oldest_snapshot_gtid: Callable[[], str | None], stop: threading.Event,
                 primary_may: bool = True) -> None:
        self.cfg = cfg
        self.store = store
        self.consul = consul
        self.node = node
        self.datadir = datadir
        self.server = LocalServer(socket, connect_timeout=1.0, read_timeout=10)
        self.status = status
        self.members = members
        self.max_lag = max_lag
        self.oldest_snapshot_gtid = oldest_snapshot_gtid
        self.stop = stop
        self.primary_may = primary_may  # Galera: never the writer (policy.eligible)
        self.interval = cfg.archive_interval
        self.ttl = max(15.0, 3 * self.interval)
        self.session: str | None = None
        self.cursor: Cursor | None = None
        self.state = "idle"  # /status
        self.problem = ""  # a gap, or failures, while they last
        self.retention_at = 0.0
        self.behind_logged = ""
        self.gap_at = 0.0  # when this node recorded a gap (0: none open)

    def start(self) -> None:
        threading.Thread(target=self._run, name="binlog-archive", daemon=True).start()

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.tick()
            except AutopilotError as exc:
                log.warning("binary-log archive: %s (retrying in %.0fs)", exc, self.interval)
                self.problem = f"the binary-log archive failed: {exc}"[:500]
            except Exception:  # the thread must survive anything, and say so
                log.exception("binary-log archiver error (it keeps running)")
        self._release("stopping")

    # --- the lock -------------------------------------------------------------------------------

    def tick(self) -> int:
        """One round: take or give up the lock, then archive. Returns segments stored."""
        why = policy.eligible(self.status(), self.members(), self.max_lag, self.primary_may)
        if why is None:
            self._release("this node no longer qualifies (a healthy replica that keeps up, "
                          "or the primary alone)")
            self.state = "idle"
            return 0
        if self.session is None:
            if self.consul.archive_lock_held():
                self.state = "idle (another node archives)"
                return 0
            session = self.consul.create_snapshot_session(self.node, self.ttl, what="binlogs")
            if not self.consul.acquire_archive_lock(session, self.node):
                self.consul.destroy_session(session)
                self.state = "idle (another node archives)"
                return 0
            self.session, self.cursor = session, None
            log.info("binary-log archive: this node archives now (%s)", why)
        elif not self.consul.renew_session(self.session):
            log.warning("binary-log archive: the lock's session is gone; another node may "
                        "archive now")
            self.session = self.cursor = None
            return 0
        if self.gap_at:
            pointer = self.consul.snapshot_pointer() or {}
            if float(pointer.get("finished_at", 0)) > self.gap_at:
                log.info("binary-log archive: snapshot %s closed the gap", pointer.get("id"))
                self.gap_at, self.problem = 0.0, ""
        n = self.archive_once(self.session)
        if time.monotonic() >= self.retention_at:
            self.retention_at = time.monotonic() + RETENTION_EVERY
            self.retention()
        return n

    def _release(self, why: str) -> None:
        if self.session is None:
            return
        session, self.session, self.cursor = self.session, None, None
        try:
            self.consul.release_archive_lock(session)
            log.info("binary-log archive: lock released (%s)", why)
        except DCSError as exc:
            log.warning("binary-log archive: could not release the lock (%s); it goes with "
                        "the session", exc)

    # --- archiving ------------------------------------------------------------------------------

    def archive_once(self, session: str) -> int:
        index, state = self.consul.archive_state()
        # Everything this node wrote before this moment is archived by the end of this round
        # (less its replication lag, and a second for the log's whole-second timestamps).
        looked = time.time() - (self.status().lag or 0) - 1
        logs = [str(r[0]) for r in self.server.execute("SHOW BINARY LOGS")]
        master = self.server.execute("SHOW MASTER STATUS")
        if not logs or not master:
            raise MySQLError("this node has no binary log (log_bin is off?)")
        mfile, mpos = str(master[0][0]), int(master[0][1])
        last = one(state["last"]) if state and state.get("last") else None
        if self.cursor is None or self.cursor.last != last or self.cursor.file not in logs:
            self.cursor = self._locate(last, logs, mfile, mpos, state)
            if self.cursor is None:
                return 0
            index, state = self.consul.archive_state()  # a gap was recorded
        stored = 0
        i = logs.index(self.cursor.file)
        while True:
            name = logs[i]
            current = name == mfile
            with _mapped(self.datadir / name) as data:
                if not data:
                    break
                header, first = binlog.read_header(data)
                txs = binlog.transactions(data, max(self.cursor.offset, first),
                                          mpos if current else None)
                for chunk in _chunks(t for t in txs if t.gtid.domain == DOMAIN):
                    index, state = self._store(session, index, state, header, data, chunk,
                                               name)
                    stored += 1
            if current or i + 1 >= len(logs):
                break
            i += 1
            self.cursor = Cursor(logs[i], 0, self.cursor.last, self.cursor.gap)
        doc = dict(state or {"seq": 0, "last": "", "last_time": 0})
        doc.update(checked_at=looked, node=self.node)
        if not self.consul.write_archive_state(session, doc, index):
            self._lost()
        else:
            self.state = (f"archiving: last {doc.get('last') or '(none)'} written "
                          f"{_ago(doc.get('last_time'))}; complete up to {_ago(looked)}")
            if self.problem.startswith("the binary-log archive failed"):
                self.problem = ""
        return stored

    def _store(self, session: str, index: int, state: dict[str, Any] | None,
               header: binlog.Header, data: bytes, chunk: list[binlog.Transaction],
               name: str) -> tuple[int, dict[str, Any]]:
        assert self.cursor is not None
        seq = int((state or {}).get("seq", 0)) + 1
        link = ("gap" if self.cursor.gap else
                str(self.cursor.last) if self.cursor.last is not None else "start")
        seg = Segment(seq, str(chunk[0].gtid), str(chunk[-1].gtid), chunk[0].timestamp,
                      chunk[-1].timestamp, link, self.node)
        stored = self.store.put_segment(seg, binlog.segment(header, data, chunk))
        doc = dict(state or {})
        doc.update(seq=seq, last=seg.last, last_time=seg.last_time, key=stored.key,
                   node=self.node, checked_at=float((state or {}).get("checked_at", 0)))
        if not self.consul.write_archive_state(session, doc, index):
            self._lost()
        self.cursor = Cursor(name, chunk[-1].end, chunk[-1].gtid)
        log.debug("archived segment %d: %s..%s (%d transactions, %d bytes)", seq, seg.first,
                  seg.last, len(chunk), stored.size)
        return self.consul.archive_state()[0], doc

    def _lost(self) -> None:
        self.session = self.cursor = None
        raise DCSError("the archive's state moved, or this node lost the archiver's lock, "
                       "while it archived: another node archives now (what this node stored "
                       "last is not in the chain; retention removes it)")

    def _locate(self, last: Gtid | None, logs: Sequence[str], mfile: str, mpos: int,
                state: dict[str, Any] | None) -> Cursor | None:
        """Where the archive continues in this node's own binary log: right after `last`.
        None: this node has not got that far yet (it waits). Records a gap when its log
        cannot continue the archive (`last` purged here, or not in its history)."""
        if last is None:
            return self._start(logs, mfile, mpos)
        newest = 0
        after: tuple[str, binlog.Transaction] | None = None
        for name, tx in self._scan(logs, mfile, mpos):
            if tx.gtid == last:
                return Cursor(name, tx.end, last)
            if tx.gtid.domain == last.domain:
                newest = max(newest, tx.gtid.seqno)
                if tx.gtid.seqno > last.seqno and (
                        after is None or tx.gtid.seqno < after[1].gtid.seqno):
                    after = (name, tx)
        if after is None:
            text = (f"this node's binary log reaches {last.domain}-*-{newest}, the archive "
                    f"{last}")
            if text != self.behind_logged:
                log.info("binary-log archive: waiting: %s", text)
                self.behind_logged = text
            return None
        why = (f"this node's binary log does not hold {last}, the archive's last transaction "
               "(purged here, or the archive holds transactions the cluster lost in a "
               f"failover); the archive continues at {after[1].gtid}")
        log.error("binary-log archive GAP: %s. Point-in-time recovery cannot cross it: the "
                  "next snapshot, due now, closes it", why)
        self.problem = f"binary-log archive gap after {last}: {why}"[:500]
        self.gap_at = time.time()
        gaps = list((state or {}).get("gaps", []))[-(MAX_GAPS - 1):]
        gaps.append({"after": str(last), "resumed": str(after[1].gtid), "at": time.time(),
                     "by": self.node})
        doc = dict(state or {})
        doc["gaps"] = gaps
        assert self.session is not None
        index, _ = self.consul.archive_state()
        if not self.consul.write_archive_state(self.session, doc, index):
            self._lost()
        return Cursor(after[0], after[1].start, last, gap=True)

    def _start(self, logs: Sequence[str], mfile: str, mpos: int) -> Cursor:
        """An empty archive starts right after the oldest kept snapshot when this node's log
        holds it (what comes before no restore needs), else at its oldest binary log."""
        wanted = {g for g in _gtids(self.oldest_snapshot_gtid() or "") if g.domain == DOMAIN}
        for name, tx in self._scan(logs, mfile, mpos) if wanted else ():
            if tx.gtid in wanted:
                log.info("binary-log archive: empty; starting after %s, the oldest kept "
                         "snapshot's position", tx.gtid)
                return Cursor(name, tx.end, None)
        log.info("binary-log archive: empty; starting at this node's oldest binary log %s",
                 logs[0])
        return Cursor(logs[0], 0, None)

    def _scan(self, logs: Sequence[str], mfile: str, mpos: int
              ) -> Iterator[tuple[str, binlog.Transaction]]:
        """Every whole transaction in this node's binary logs, the newest file first (the
        current one up to the position the server reported)."""
        for name in reversed(logs):
            with _mapped(self.datadir / name) as data:
                if not data:
                    continue
                _, first = binlog.read_header(data)
                for tx in binlog.transactions(data, first, mpos if name == mfile else None):
                    yield name, tx

    # --- retention ------------------------------------------------------------------------------

    def retention(self) -> int:
        """Delete the segments no kept snapshot needs: those that end at or before the oldest
        kept snapshot's position. Nothing while the cluster has no snapshot."""
        oldest = self.oldest_snapshot_gtid()
        if not oldest:
            return 0
        floor = {g.domain: g.seqno for g in _gtids(oldest)}
        n = 0
        for seg in self.store.segments():
            end = one(seg.last)
            if end.domain in floor and end.seqno <= floor[end.domain]:
                self.store.delete_segment(seg)
                n += 1
        if n:
            log.info("binary-log archive retention: deleted %d segment(s) older than the oldest "
                     "kept snapshot (GTID %s)", n, oldest)
        return n


def _chunks(txs: Iterable[binlog.Transaction]) -> Iterator[list[binlog.Transaction]]:
    """Consecutive transactions, at most SEGMENT_MAX bytes of them at a time (a backlog of
    a whole binary log is never held as one list)."""
    chunk: list[binlog.Transaction] = []
    size = 0
    for tx in txs:
        if chunk and size + (tx.end - tx.start) > SEGMENT_MAX:
            yield chunk
            chunk, size = [], 0
        chunk.append(tx)
        size += tx.end - tx.start
    if chunk:
        yield chunk


def _gtids(position: str) -> list[Gtid]:
    return list(parse(position).values())


def _ago(ts: object) -> str:
    try:
        return f"{time.time() - float(ts):.0f}s ago" if ts else "never"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "?"
