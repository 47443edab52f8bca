"""Snapshots as the daemon and the CLI use them: one object that knows this node's store,
Consul, local server and settings, and offers the whole operations (take one, find the latest,
provision an empty data directory, rebuild an errant node, verify a snapshot)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import gtid
from .backup import snapshot
from .backup.provision import from_snapshot, restore_datadir
from .backup.scheduler import SnapshotScheduler
from .backup.store import Manifest, Progress, SnapshotStore
from .config import Settings, SnapshotSettings
from .dcs import Consul
from .exceptions import DCSError, MySQLError, SnapshotError
from .model import Member, NodeStatus, Role
from .mysql import datadir as dd
from .mysql.server import LocalServer

log = logging.getLogger(__name__)
RESTORE_RETRY = 30.0  # seconds between attempts to provision an empty node


class Snapshots:
    def __init__(self, settings: Settings, consul: Consul, *, cnf: Path,
                 store: SnapshotStore | None = None) -> None:
        assert settings.snapshots is not None
        self.s = settings
        self.cfg: SnapshotSettings = settings.snapshots
        self.consul = consul
        self.cnf = cnf
        self.store = store or SnapshotStore(self.cfg)
        self.server = LocalServer(settings.socket)
        self.scheduler: SnapshotScheduler | None = None
        # TOPOLOGY=galera: taken on a Synced reader with the Galera position, restored as a
        # grastate.dat a node joins from by IST
        self.galera = settings.topology == "galera"

    # --- the schedule (daemon) --------------------------------------------------------------

    def make_scheduler(self, status: Callable[[], NodeStatus],
                       members: Callable[[], tuple[Member, ...]], stop: threading.Event,
                       progress: Progress | None = None) -> SnapshotScheduler:
        """The schedule's lock, retries and retention around this node's `take` (`progress`
        replaces the scheduler's own status line, for the CLI's bar)."""
        def take(role: str, own: Progress, should_stop: Callable[[], bool]) -> Manifest:
            return self.take(role, status().leader or "", progress or own, should_stop)

        return SnapshotScheduler(
            self.cfg, self.store, self.consul, node=self.s.node_name, status=status,
            members=members, primary_binlog=lambda: self.primary_binlog(status().role),
            take=take, verify=self.verify if self.cfg.verify else None,
            max_lag=self.s.replica_max_lag, stop=stop, primary_may=not self.galera)

    def start_scheduler(self, status: Callable[[], NodeStatus],
                        members: Callable[[], tuple[Member, ...]],
                        stop: threading.Event) -> None:
        self.scheduler = self.make_scheduler(status, members, stop)
        self.scheduler.start()

    @property
    def state(self) -> str:
        return self.scheduler.state if self.scheduler else "idle"

    def primary_binlog(self, role: Role) -> str:
        """The primary's current binary log, as this node sees it."""
        try:
            if role == Role.PRIMARY:
                return self.server.binlog_file()
            r = self.server.replica_status()
            return r.master_log_file if r else ""
        except MySQLError:
            return ""

    def take(self, role: str, primary: str, progress: Progress | None = None,
             should_stop: Callable[[], bool] = lambda: False) -> Manifest:
        return snapshot.take(
            self.store, node=self.s.node_name, role=role, primary=primary,
            primary_binlog=self.primary_binlog(Role.PRIMARY if role == Role.PRIMARY.value
                                               else Role.REPLICA),
            cnf=self.cnf, socket_path=self.s.socket,
            compression_level=self.cfg.compression_level, progress=progress,
            should_stop=should_stop, galera=self.galera)

    # --- finding the latest -------------------------------------------------------------------

    def latest(self) -> Manifest | None:
        """The snapshot the cluster's pointer names (None: the cluster has none)."""
        pointer = self.consul.snapshot_pointer()
        if pointer is None:
            return None
        return self.store.manifest(str(pointer["id"]))

    # --- provisioning (daemon, before mysqld starts) --------------------------------------------

    def provision_empty(self, publish: Callable[[str, str], None],
                        stop: threading.Event, galera_uuid: Callable[[], str] | None = None
                        ) -> bool:
        """First boot of a node in a cluster that has a snapshot: restore it. Returns False
        when the cluster has no snapshot (the node initializes and copies by replication; on
        Galera it joins by a full state transfer), or on Galera when the snapshot is not of
        the cluster `galera_uuid()` names (Consul's record; "" for a cluster not created yet).
        A failed restore is retried every RESTORE_RETRY seconds, the node unhealthy with the
        cause meanwhile; it never falls back to an empty server."""
        datadir = self.s.datadir
        while not stop.is_set():
            try:
                m = self.latest()
                if m is None:
                    log.info("the cluster has no snapshot yet: " + (
                        "this node joins by a full state transfer" if self.galera else
                        "initializing an empty server (it copies everything from the primary "
                        "by replication)"))
                    return False
                if self.galera:
                    cluster = galera_uuid() if galera_uuid else ""
                    if not cluster or m.galera_uuid != cluster:
                        log.warning("the latest snapshot %s is of Galera cluster %s, not of "
                                    "this one (%s): not restoring it; this node joins by a "
                                    "full state transfer", m.id, m.galera_uuid or "(none)",
                                    cluster or "not created yet")
                        return False
                if dd.inspect(datadir) == dd.DataDirState.INTERRUPTED:
                    log.warning("an earlier restore or first boot was interrupted: wiping it")
                    dd.wipe_interrupted(datadir)
                log.info("first boot: restoring snapshot %s (GTID %s, %d MiB, taken on %s) "
                         "from %s", m.id, m.gtid, m.stored_bytes >> 20, m.node, self.store.where)
                publish(f"restoring snapshot {m.id}", "")
                restore_datadir(*from_snapshot(self.store, m), datadir,
                                self._publisher(publish, m), galera=self.galera)
                return True
            except (SnapshotError, DCSError) as exc:
                log.error("cannot provision this node from a snapshot (retrying in %.0fs; the "
                          "data directory is left empty): %s", RESTORE_RETRY, exc)
                publish("restore failed", f"restore failed: {exc}")
                stop.wait(RESTORE_RETRY)
        return True

    def for_rebuild(self, newer_than: str | None) -> tuple[Manifest | None, str]:
        """The snapshot a rebuild can use, or None and why not. `newer_than`: a node behind
        the primary's purged binary logs needs one newer than its own position."""
        try:
            m = self.latest()
        except (SnapshotError, DCSError) as exc:
            return None, f"the snapshots cannot be read ({exc})"
        if m is None:
            return None, "the cluster has no snapshot"
        if newer_than is not None:
            mine, theirs = gtid.parse(newer_than), gtid.parse(m.gtid)
            if not gtid.covers(theirs, mine) or theirs == mine:
                return None, (f"the latest snapshot {m.id} (GTID {m.gtid}) is no newer than "
                              f"this node's position {newer_than}")
        return m, ""

    def _publisher(self, publish: Callable[[str, str], None], m: Manifest) -> Progress:
        last = [0.0]

        def progress(n: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 1.0:
                last[0] = now
                pct = 100 * n / max(1, m.stored_bytes)
                publish(f"restoring snapshot {m.id}: {pct:.0f}%", "")
        return progress

    # --- verification (CLI and, with SNAPSHOT_VERIFY, the schedule) ----------------------------

    def verify(self, m: Manifest, progress: Progress | None = None) -> str:
        return verify_snapshot(self.store, m, progress)


def verify_snapshot(store: SnapshotStore, m: Manifest, progress: Progress | None = None,
                    scratch_parent: str | None = None) -> str:
    """Restore `m` into a scratch directory, start a throwaway mysqld on it, read every table
    and check the GTID position; return a one-line summary or raise SnapshotError."""
    scratch = Path(tempfile.mkdtemp(prefix="apm-verify-", dir=scratch_parent))
    result: list[str] = []
    try:
        target = scratch / "data"
        snapshot.extract(store, m, target, progress)
        snapshot.chown_tree(scratch)

        def check(sock: Path) -> None:
            srv = LocalServer(sock, connect_timeout=2, read_timeout=600)
            try:
                tables = srv.execute(
                    "SELECT table_schema, table_name FROM information_schema.tables WHERE "
                    "table_type = 'BASE TABLE' AND table_schema NOT IN "
                    "('information_schema', 'performance_schema', 'sys')")
                rows = 0
                for schema, name in tables:
                    rows += int(srv.execute(f"SELECT COUNT(*) FROM `{schema}`.`{name}`")[0][0])
                srv.execute("SET GLOBAL gtid_slave_pos = %s", (m.gtid,))
                pos = str(srv.execute("SELECT @@gtid_current_pos")[0][0] or "")
                if pos != m.gtid:
                    raise SnapshotError(f"the restored server reports GTID position {pos!r}, "
                                        f"the manifest {m.gtid!r}")
                result.append(f"snapshot {m.id} OK: {len(tables)} tables, {rows} rows read, "
                              f"GTID {m.gtid or '(empty)'} as in the manifest")
            except MySQLError as exc:
                raise SnapshotError(f"the restored server failed a check: {exc}") from exc
            finally:
                srv.close()

        snapshot.throwaway_server(target, check)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result[0]

