"""The cluster's snapshot schedule, run on every node in its own thread (never in the HA loop:
a snapshot takes minutes and must not delay a fence or an election).

Every CHECK_EVERY seconds a node asks: is a snapshot due (policy.snapshot_due) and am I the
right node (policy.eligible: a healthy replica, or the primary when it has none)? If so it takes
the cluster-wide snapshot lock in Consul (a session tied to its node's serfHealth: released if
the node dies), checks again that a snapshot is still due (another node may just have finished
one), aborts multipart uploads left open by a node that died mid-upload, takes the snapshot,
writes its manifest, moves the Consul pointer, and applies retention. A failure leaves the
pointer where it was and is retried with a backoff (15 s doubling to 10 min).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ..config import SnapshotSettings
from ..dcs import Consul
from ..exceptions import AutopilotError, DCSError, SnapshotError
from ..model import Member, NodeStatus, Role
from . import policy
from .store import Manifest, SnapshotStore

log = logging.getLogger(__name__)
CHECK_EVERY = 5.0
RETRY_FIRST, RETRY_MAX = 15.0, 600.0
LOCK_TTL = 15.0

TakeFn = Callable[[str, Callable[[int], None], Callable[[], bool]], Manifest]
# (role, progress, should_stop) -> manifest; the daemon binds the local server's details
VerifyFn = Callable[[Manifest], object]


def pointer_of(m: Manifest) -> dict[str, Any]:
    return {k: v for k, v in asdict(m).items()
            if k in ("id", "node", "primary", "gtid", "binlog_file", "started_at",
                     "finished_at", "stored_bytes")}


class SnapshotScheduler:
    def __init__(self, cfg: SnapshotSettings, store: SnapshotStore, consul: Consul, *,
                 node: str, status: Callable[[], NodeStatus],
                 members: Callable[[], tuple[Member, ...]], primary_binlog: Callable[[], str],
                 take: TakeFn, verify: VerifyFn | None, max_lag: int,
                 stop: threading.Event, primary_may: bool = True,
                 archive_gap_at: Callable[[], float] = lambda: 0.0) -> None:
        self.cfg = cfg
        self.store = store
        self.consul = consul
        self.node = node
        self.status = status
        self.members = members
        self.primary_binlog = primary_binlog
        self.take_fn = take
        self.verify_fn = verify
        self.max_lag = max_lag
        self.primary_may = primary_may  # policy.eligible
        self.archive_gap_at = archive_gap_at  # a gap in the binary-log archive makes one due
        self.stop = stop
        self.state = "idle"  # shown in /status
        self.problem = ""  # the last snapshot's failure, until one succeeds (/status)
        self.pointer_seen: dict[str, Any] | None = None  # the cluster's pointer, last read
        self.retry_at = 0.0
        self.backoff = RETRY_FIRST
        self.running = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._run, name="snapshots", daemon=True).start()

    def _run(self) -> None:
        while not self.stop.wait(CHECK_EVERY):
            if time.monotonic() < self.retry_at:
                continue
            try:
                self.tick()
            except AutopilotError as exc:
                log.debug("snapshot schedule: %s", exc)
            except Exception:  # the thread must survive anything, and say so
                log.exception("snapshot scheduler error (it keeps running)")

    def tick(self) -> Manifest | None:
        st = self.status()
        why_me = policy.eligible(st, self.members(), self.max_lag, self.primary_may)
        if why_me is None:
            return None
        why = self._due()
        if why is None:
            return None
        return self.run_once(f"{why}; this node is {why_me}", st.role)

    def _due(self) -> str | None:
        self.pointer_seen = self.consul.snapshot_pointer()
        return policy.snapshot_due(
            self.pointer_seen, now=time.time(), interval=self.cfg.interval,
            rotations=self.cfg.binlog_rotations, primary=self.status().leader or "",
            primary_binlog=self.primary_binlog(), archive_gap_at=self.archive_gap_at())

    def run_once(self, why: str, role: Role, force: bool = False) -> Manifest | None:
        """Take one snapshot under the cluster lock. Returns None when another node holds the
        lock (or, unless forced, no snapshot is due any more once the lock is held)."""
        if not self.running.acquire(blocking=False):
            return None
        try:
            session = self.consul.create_snapshot_session(self.node, LOCK_TTL)
            try:
                if not self.consul.acquire_snapshot_lock(session, self.node):
                    holder = self.consul.snapshot_lock_holder()
                    log.debug("snapshot due (%s) but %s holds the snapshot lock", why, holder)
                    return None
                if not force and self._due() is None:
                    return None  # another node finished one meanwhile
                return self._locked(why, role, session)
            finally:
                try:
                    self.consul.release_snapshot_lock(session)
                except DCSError as exc:
                    log.warning("could not release the snapshot lock (%s): it goes with our "
                                "session within %.0fs", exc, 2 * LOCK_TTL)
        finally:
            self.running.release()

    def _locked(self, why: str, role: Role, session: str) -> Manifest | None:
        renewing, lost = threading.Event(), threading.Event()

        def renew() -> None:
            while not renewing.wait(LOCK_TTL / 3):
                try:
                    if not self.consul.renew_session(session):
                        log.warning("the snapshot lock's session is gone: another node may "
                                    "start a snapshot and clean up after this one; this one "
                                    "stops")
                        lost.set()
                        return
                except DCSError as exc:
                    log.warning("snapshot lock renewal failed: %s", exc)

        threading.Thread(target=renew, name="snapshot-lock", daemon=True).start()
        t0 = time.monotonic()
        try:
            log.info("snapshot: starting (%s)", why)
            self.state = "running"
            aborted = self.store.abort_open_uploads()
            if aborted:
                log.warning("snapshot: aborted %d multipart upload(s) left open by a snapshot "
                            "that died halfway", aborted)
            m = self.take_fn(role.value, self._progress,
                             lambda: self.stop.is_set() or lost.is_set()
                             or self._now_writer(role))
            if self.verify_fn is not None:
                self.state = "verifying"
                log.info("snapshot verification: %s", self.verify_fn(m))
            self._publish(m, session, lost)
            took = time.monotonic() - t0
            log.info("snapshot %s done in %.1fs: %d MiB stored (%d MiB raw, %.2fx), GTID %s; "
                     "the cluster's pointer names it", m.id, took, m.stored_bytes >> 20,
                     m.raw_bytes >> 20, m.raw_bytes / max(1, m.stored_bytes), m.gtid)
            self.state = f"last snapshot {m.id} ok ({took:.0f}s)"
            self.problem = ""
            self.backoff = RETRY_FIRST
            self._retention(m.id)
            return m
        except AutopilotError as exc:
            if isinstance(exc, SnapshotError) and self._now_writer(role):
                # not a failure: a reader (policy.eligible) takes the next one, no backoff
                log.warning("snapshot abandoned after %.1fs: this node became the Galera "
                            "writer while taking it (mariabackup would stall the writer's "
                            "commits); a Synced reader takes it instead (%s)",
                            time.monotonic() - t0, exc)
                self.state = "last snapshot abandoned: this node became the writer"
                return None
            self.retry_at = time.monotonic() + self.backoff
            log.error("snapshot FAILED after %.1fs, retrying in %.0fs; the cluster's pointer "
                      "still names the previous snapshot: %s", time.monotonic() - t0,
                      self.backoff, exc)
            self.state = f"last snapshot failed: {exc}"[:300]
            self.problem = f"the last snapshot failed ({time.strftime('%H:%M:%S')} UTC), " \
                f"retrying in {self.backoff:.0f}s: {exc}"[:500]
            self.backoff = min(RETRY_MAX, self.backoff * 2)
            if isinstance(exc, SnapshotError | DCSError):
                return None
            raise
        finally:
            renewing.set()

    def _publish(self, m: Manifest, session: str, lost: threading.Event) -> None:
        """Manifest, then the pointer, only while the lock is still ours: once it went, the
        next holder may have deleted our data object as the leftover of a dead snapshot
        (retention's orphans), and a pointer to it would name a snapshot nobody can restore.
        A lost lock removes what we stored instead."""
        if not lost.is_set():
            self.store.put_manifest(m)
            if self.consul.set_snapshot_pointer(pointer_of(m), session):
                return
        log.warning("snapshot %s: the snapshot lock was lost before it was published; "
                    "deleting it (another node may have cleaned up its objects already)", m.id)
        try:
            self.store.delete(m.id)
        except SnapshotError as exc:
            log.warning("could not delete snapshot %s (%s): its manifest may name a missing "
                        "object; a restore marks it bad and skips it", m.id, exc)
        raise SnapshotError(f"snapshot {m.id} was not published: this node lost the snapshot "
                            "lock while taking it (its Consul session expired)")

    def _now_writer(self, started_as: Role) -> bool:
        """A snapshot begun on a reader whose node has since become a writer that may not take
        one (a Galera writer: policy.eligible's `primary_may`): it is stopped."""
        return (not self.primary_may and started_as != Role.PRIMARY
                and self.status().role == Role.PRIMARY)

    def _progress(self, n: int) -> None:
        self.state = f"running: {n >> 20} MiB stored"

    def _retention(self, latest: str) -> None:
        """Past retention, and every snapshot marked bad (it cannot be restored, and must not
        count among the SNAPSHOT_KEEP good ones); leftovers of snapshots that died halfway."""
        try:
            bad = self.consul.bad_snapshots()
            manifests = self.store.manifests()
            good = [m for m in manifests if m.id not in bad]
            for m in policy.to_delete(good, now=time.time(), keep=self.cfg.keep,
                                      keep_days=self.cfg.keep_days, latest=latest):
                self.store.delete(m.id)
                log.info("retention: deleted snapshot %s (%s)", m.id,
                         time.strftime("%Y-%m-%d %H:%M", time.gmtime(m.finished_at)))
            stored = {m.id for m in manifests}
            for sid, doc in bad.items():
                if sid == latest:
                    continue
                if sid in stored:
                    self.store.delete(sid)
                    log.info("retention: deleted snapshot %s, marked bad by %s: %s", sid,
                             doc.get("by", "?"), doc.get("why", "?"))
                self.consul.forget_bad_snapshot(sid)
            for orphan in self.store.orphans():
                if orphan != latest:
                    self.store.delete(orphan)
                    log.info("retention: deleted the leftovers of unfinished snapshot %s",
                             orphan)
        except (SnapshotError, DCSError) as exc:
            log.warning("retention skipped: %s", exc)
