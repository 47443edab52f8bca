"""Re-provisioning a node the primary refuses: errant transactions (a forced failover, an
operator's local write), or a position behind the primary's purged binary logs.

The source is the latest snapshot when one can serve (snapshots configured, and newer than the
node's position when it is behind), else a copy of a live node (backup/clone.py): a healthy
replica first, the primary last. The errant GTIDs are logged before they are discarded; the
old data stays aside in the data directory until the new data is in place (provision.py), so a
failure, or a kill halfway, puts it back. REPROVISION=false turns this off: the node then
waits, unhealthy, saying what to do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from .backup.provision import Fetch, from_node, from_snapshot, rebuild_datadir
from .config import Settings
from .exceptions import SnapshotCorrupt, SnapshotError
from .process import ManagedProcess
from .snapshots import Snapshots

log = logging.getLogger(__name__)
RETRY = 60.0  # seconds between attempts


class Reprovisioner:
    def __init__(self, settings: Settings, snapshots: Snapshots | None) -> None:
        self.s = settings
        self.snapshots = snapshots
        self.retry_at = 0.0

    def rebuild(self, mysqld: ManagedProcess, why: Sequence[str],
                publish: Callable[[str, str], None], *, newer_than: str | None,
                donors: Sequence[tuple[str, str]]) -> bool:
        """Rebuild this node (mysqld stopped meanwhile). `why`: its errant GTIDs, or why it is
        behind; `donors`: (node, address) to copy from, best first. True when rebuilt."""
        if time.monotonic() < self.retry_at:
            return False
        self.retry_at = time.monotonic() + RETRY
        sources: list[tuple[Fetch, str]] = []
        notes = []
        snapshot_id = ""
        if self.snapshots is not None:
            m, note = self.snapshots.for_rebuild(newer_than)
            if m is not None:
                sources.append(from_snapshot(self.snapshots.store, m))
                snapshot_id = m.id
            else:
                notes.append(note)
        else:
            notes.append("snapshots are not configured (S3_BUCKET)")
        for node, address in donors:
            sources.append(from_node(f"http://{address}:{self.s.health_port}",
                                     self.s.repl_password, self.s.node_name, node))
        if not sources:
            log.error("this node needs re-provisioning (%s), but %s and no healthy node can "
                      "be copied: retrying in %.0fs. By hand: stop it, empty its data "
                      "directory and start it", "; ".join(why), "; ".join(notes), RETRY)
            return False
        log.warning("RE-PROVISIONING this node: %s. What only it holds is discarded (listed "
                    "here); its old data is kept aside in %s until the new data is in place",
                    "; ".join(why), self.s.datadir)
        mysqld.stop(self.s.stop_timeout)
        try:
            for fetch, what in sources:
                publish(f"re-provisioning from {what}", "")
                try:
                    rebuild_datadir(fetch, what, self.s.datadir, self._progress(publish, what))
                    log.info("re-provisioned from %s: rejoining as a replica", what)
                    return True
                except SnapshotError as exc:
                    log.error("re-provisioning from %s failed, the old data is back in place: "
                              "%s", what, exc)
                    if isinstance(exc, SnapshotCorrupt) and self.snapshots is not None:
                        self.snapshots.mark_bad(snapshot_id, str(exc))  # a live node next
                    publish("re-provisioning failed", f"re-provisioning failed: {exc}")
            return False
        finally:
            mysqld.start()

    @staticmethod
    def _progress(publish: Callable[[str, str], None], what: str) -> Callable[[int], None]:
        last = [0.0]

        def progress(n: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 1.0:
                last[0] = now
                publish(f"re-provisioning from {what}: {n >> 20} MiB", "")
        return progress
