"""A node's data directory from a snapshot: first boot of a new node, and the rebuild of a node
refused for errant transactions. Both are all-or-nothing:

    restore:  mark pending -> extract + prepare into #autopilot-restore -> move up -> set the
              GTID position in a throwaway server -> mark done
    rebuild:  move everything into #autopilot-aside -> restore -> delete the aside copy
              (any failure: empty again and move the old data back)

The pending marker (datadir.py's first-boot state machine) makes a restore killed at any point
look INTERRUPTED at the next start, which wipes it; an aside directory found at start is moved
back before anything else (`recover_interrupted_rebuild`). Both directories exist only while
mysqld is stopped: MariaDB would list them as databases.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from ..exceptions import MySQLError, SnapshotError
from ..mysql import datadir as dd
from ..mysql.server import LocalServer
from .snapshot import chown_tree, extract, throwaway_server
from .store import Manifest, Progress, SnapshotStore

log = logging.getLogger(__name__)
STAGING = "#autopilot-restore"
ASIDE = "#autopilot-aside"
DISCARD = "#autopilot-discard"


def restore_datadir(store: SnapshotStore, m: Manifest, datadir: Path,
                    progress: Progress | None = None) -> None:
    """Restore snapshot `m` into the (empty) data directory. Raises SnapshotError with the
    directory emptied again (our state file, the server_id, is kept)."""
    t0 = time.monotonic()
    keep = frozenset({dd.STATE, ASIDE, DISCARD})
    dd.mark_pending(datadir, f"restore of snapshot {m.id}")
    try:
        staging = datadir / STAGING
        extract(store, m, staging, progress)
        for p in staging.iterdir():
            p.rename(datadir / p.name)
        staging.rmdir()
        chown_tree(datadir)
        throwaway_server(datadir, lambda sock: _set_position(sock, m.gtid))
        dd.mark_done(datadir, f"restored from snapshot {m.id} (GTID {m.gtid})")
    except BaseException as exc:
        dd.empty_dir(datadir, keep)
        if isinstance(exc, (SnapshotError, OSError, MySQLError)):
            raise SnapshotError(f"restore of snapshot {m.id} failed, the data directory is "
                                f"empty again: {exc}") from exc
        raise
    log.info("restored snapshot %s (%d MiB stored, GTID %s, taken on %s) in %.1fs", m.id,
             m.stored_bytes >> 20, m.gtid or "(empty)", m.node, time.monotonic() - t0)


def _set_position(sock: Path, gtid: str, timeout: float = 60) -> None:
    """The restored data holds no binary logs: its GTID position is the replica position we
    set here (in mysql.gtid_slave_pos), and replication continues from it."""
    server = LocalServer(sock, connect_timeout=1.0, read_timeout=30)
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.execute("SET GLOBAL gtid_slave_pos = %s", (gtid,))
            break
        except MySQLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    server.close()


def rebuild_datadir(store: SnapshotStore, m: Manifest, datadir: Path,
                    progress: Progress | None = None) -> None:
    """Replace the data directory (mysqld stopped) by snapshot `m`, keeping the old data aside
    until the restore succeeded; on failure the old data is put back as it was."""
    aside = datadir / ASIDE
    aside.mkdir(exist_ok=True)
    for p in list(datadir.iterdir()):
        if p.name not in (dd.STATE, ASIDE):
            p.rename(aside / p.name)
    try:
        restore_datadir(store, m, datadir, progress)
    except BaseException:
        _put_back(datadir, aside)
        raise
    _discard(datadir, aside)


def _discard(datadir: Path, aside: Path) -> None:
    """The restore is complete (its DONE marker is written): the old data goes. It is renamed
    first, in one step, so a kill during the slow delete never looks like a rebuild that
    still needs undoing."""
    discard = datadir / DISCARD
    aside.rename(discard)
    dd.fsync_dir(datadir)
    shutil.rmtree(discard)


def _put_back(datadir: Path, aside: Path) -> None:
    dd.empty_dir(datadir, frozenset({dd.STATE, ASIDE}))
    for p in aside.iterdir():
        p.rename(datadir / p.name)
    aside.rmdir()
    dd.fsync_dir(datadir)


def recover_interrupted_rebuild(datadir: Path) -> bool:
    """At start, after a rebuild that was killed halfway:
    - a complete restore (its DONE marker in the data directory: the old data's marker is
      aside) with the old data still aside: the restore stands, the old data goes;
    - a restore that did not finish: it is removed and the old data moved back (the node comes
      up as it was, errant, and the rebuild is tried again);
    - old data renamed for deletion: the delete is finished."""
    aside, discard = datadir / ASIDE, datadir / DISCARD
    if discard.is_dir():
        log.warning("finishing the deletion of the data a rebuild replaced (%s)", discard)
        shutil.rmtree(discard)
    if not aside.is_dir():
        return False
    if (datadir / dd.DONE).exists():
        log.warning("a rebuild from a snapshot completed but its old data was still aside in "
                    "%s: deleting the old data", aside)
        _discard(datadir, aside)
        return True
    log.warning("a rebuild from a snapshot was interrupted: moving the old data in %s back "
                "before starting", aside)
    _put_back(datadir, aside)
    return True
