"""A node's data directory from a snapshot or a copy of a live node (clone.py): first boot of
a new node, and the rebuild of a node refused for errant transactions (or behind the primary's
purged binary logs). A `Fetch` unpacks and prepares a backup into a directory and says its GTID
position; both sources share everything after it. Both operations are all-or-nothing:

    restore:  mark pending -> fetch (unpack + prepare) into #autopilot-restore -> move up ->
              set the GTID position in a throwaway server (Galera: grastate.dat from the
              backup's Galera position) -> mark done (a new data id)
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
from collections.abc import Callable
from pathlib import Path

from ..exceptions import MySQLError, SnapshotCorrupt, SnapshotError
from ..mysql import datadir as dd
from ..mysql import wsrep
from ..mysql.server import LocalServer
from . import clone
from .snapshot import (
    chown_tree,
    extract,
    prepare,
    read_backup_gtid,
    read_galera_position,
    throwaway_server,
    unpack,
)
from .store import Manifest, Progress, SnapshotStore

# Unpack and prepare a backup into the (empty) directory; return its GTID position.
Fetch = Callable[[Path, Progress | None], str]

log = logging.getLogger(__name__)
STAGING = "#autopilot-restore"
ASIDE = "#autopilot-aside"
DISCARD = "#autopilot-discard"


def from_snapshot(store: SnapshotStore, m: Manifest) -> tuple[Fetch, str]:
    """A Fetch of snapshot `m`, and its name for messages."""
    def fetch(target: Path, progress: Progress | None) -> str:
        extract(store, m, target, progress)
        return m.gtid
    return fetch, f"snapshot {m.id}"


def from_node(url: str, secret: str, me: str, donor: str) -> tuple[Fetch, str]:
    """A Fetch of a copy of the live node at `url` (clone.py), and its name for messages."""
    def fetch(target: Path, progress: Progress | None) -> str:
        unpack(lambda sink: clone.fetch(url, secret, me, sink, progress), target,
               f"the copy of {donor}")
        prepare(target)
        return read_backup_gtid(target)
    return fetch, f"a copy of {donor}"


def restore_datadir(fetch: Fetch, what: str, datadir: Path,
                    progress: Progress | None = None, galera: bool = False) -> str:
    """Restore `what` into the (empty) data directory; return its GTID position. Raises
    SnapshotError with the directory emptied again (our state file, the server_id, is kept).
    With `galera`, the backup's Galera position becomes grastate.dat instead (the node then
    joins by IST from it, or by SST when no member's write-set cache reaches back that far);
    no throwaway server writes anything into the data first."""
    t0 = time.monotonic()
    keep = frozenset({dd.STATE, ASIDE, DISCARD})
    dd.mark_pending(datadir, f"restore of {what}")
    try:
        staging = datadir / STAGING
        position = fetch(staging, progress)
        for p in staging.iterdir():
            p.rename(datadir / p.name)
        staging.rmdir()
        chown_tree(datadir)
        if galera:
            pos = read_galera_position(datadir)
            if pos is None:
                raise SnapshotError(f"{what} holds no Galera position (xtrabackup_galera_info):"
                                    " it was not taken with --galera-info on a Galera node")
            wsrep.write_grastate(datadir, wsrep.Position(*pos), safe_to_bootstrap=False)
            position = f"{pos[0]}:{pos[1]}"
        else:
            throwaway_server(datadir, lambda sock: _set_position(sock, position))
        dd.mark_done(datadir, f"restored from {what} ({'Galera position' if galera else 'GTID'}"
                     f" {position})")
    except BaseException as exc:
        dd.empty_dir(datadir, keep)
        if isinstance(exc, (SnapshotError, OSError, MySQLError)):
            cls = SnapshotCorrupt if isinstance(exc, SnapshotCorrupt) else SnapshotError
            raise cls(f"restore of {what} failed, the data directory is empty again: "
                      f"{exc}") from exc
        raise
    log.info("restored %s (GTID %s) in %.1fs", what, position or "(empty)",
             time.monotonic() - t0)
    return position


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


def rebuild_datadir(fetch: Fetch, what: str, datadir: Path,
                    progress: Progress | None = None) -> None:
    """Replace the data directory (mysqld stopped) by `what`, keeping the old data aside
    until the restore succeeded; on failure the old data is put back as it was."""
    aside = datadir / ASIDE
    aside.mkdir(exist_ok=True)
    for p in list(datadir.iterdir()):
        if p.name not in (dd.STATE, ASIDE):
            p.rename(aside / p.name)
    try:
        restore_datadir(fetch, what, datadir, progress)
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
