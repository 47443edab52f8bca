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
from .backup.archive import BinlogArchiver
from .backup.provision import from_node, from_snapshot, restore_datadir
from .backup.scheduler import SnapshotScheduler
from .backup.store import Manifest, Progress, SnapshotStore
from .config import Settings, SnapshotSettings
from .dcs import Consul
from .exceptions import DCSError, MySQLError, SnapshotCorrupt, SnapshotError
from .model import Member, NodeStatus, Role, copy_sources
from .mysql import datadir as dd
from .mysql import osuser
from .mysql.server import LocalServer
from .utils import format_size

log = logging.getLogger(__name__)
# On the data volume, hidden from mysqld (ignore_db_dirs in the rendered my.cnf)
SCRATCH = "#autopilot-verify"
VERIFY_HEADROOM = 512 << 20
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
        self.archiver: BinlogArchiver | None = None
        # TOPOLOGY=galera: taken on a Synced reader with the Galera position, restored as a
        # grastate.dat a node joins from by IST
        self.galera = settings.topology == "galera"
        self._problem = ""  # a snapshot this node found unusable (/status), until a new one
        self._bad_id = ""

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
            max_lag=self.s.replica_max_lag, stop=stop, primary_may=not self.galera,
            archive_gap_at=self.archive_gap_at)

    def start_scheduler(self, status: Callable[[], NodeStatus],
                        members: Callable[[], tuple[Member, ...]],
                        stop: threading.Event) -> None:
        """The snapshot schedule and, with BINLOG_ARCHIVE_INTERVAL, the binary-log archiver
        (both threads of their own)."""
        self.scheduler = self.make_scheduler(status, members, stop)
        self.scheduler.start()
        if self.cfg.archive_interval > 0:
            self.archiver = BinlogArchiver(
                self.cfg, self.store, self.consul, node=self.s.node_name,
                datadir=self.s.datadir, socket=self.s.socket, status=status, members=members,
                max_lag=self.s.replica_max_lag, oldest_snapshot_gtid=self._oldest_gtid,
                stop=stop, primary_may=not self.galera)
            self.archiver.start()

    def _oldest_gtid(self) -> str | None:
        """The position of the oldest snapshot retention keeps (archive retention's floor)."""
        usable, _ = self.usable()
        return min(usable, key=lambda m: m.id).gtid if usable else None

    def cluster_metrics(self) -> dict[str, float] | None:
        """The latest snapshot and the binary-log archive, for /metrics (metrics.py); None
        when Consul does not answer."""
        try:
            pointer = self.consul.snapshot_pointer()
            _, archive = self.consul.archive_state()
        except DCSError:
            return None
        now = time.time()
        out: dict[str, float] = {}
        if pointer:
            finished = float(pointer.get("finished_at", 0))
            out["snapshot_last_age_seconds"] = now - finished
            out["snapshot_last_size_bytes"] = float(pointer.get("stored_bytes", 0))
            if pointer.get("started_at"):
                out["snapshot_last_duration_seconds"] = finished - float(pointer["started_at"])
            out["snapshot_last_bad"] = float(bool(pointer.get("bad")))
        if archive:
            out["binlog_archive_complete_age_seconds"] = now - float(
                archive.get("checked_at") or 0)
            if archive.get("last_time"):
                out["binlog_archive_last_transaction_age_seconds"] = now - float(
                    archive["last_time"])
            out["binlog_archive_segments"] = float(archive.get("seq", 0))
            closed = float((pointer or {}).get("finished_at", 0))
            out["binlog_archive_gaps"] = float(sum(
                1 for g in archive.get("gaps", []) if float(g.get("at") or 0) > closed))
        return out

    def archive_gap_at(self) -> float:
        """When the binary-log archive last recorded a gap (0: never): a snapshot taken
        after it closes it."""
        if self.cfg.archive_interval <= 0:
            return 0.0
        _, state = self.consul.archive_state()
        gaps = (state or {}).get("gaps") or []
        return float(gaps[-1].get("at", 0)) if gaps else 0.0

    @property
    def state(self) -> str:
        return self.scheduler.state if self.scheduler else "idle"

    @property
    def problem(self) -> str:
        """What is wrong with the cluster's snapshots as this node saw it, while it lasts
        ("": nothing): a snapshot it found unusable (until a newer one succeeds), or the
        failure of the last snapshot it took (wrong S3 credentials ...)."""
        sched = self.scheduler.problem if self.scheduler else ""
        if self.archiver is not None and self.archiver.problem:
            sched = "; ".join(x for x in (sched, self.archiver.problem) if x)
        if self._problem and self.scheduler is not None:
            seen = self.scheduler.pointer_seen
            if seen and not seen.get("bad") and seen.get("id", "") > self._bad_id:
                self._problem = ""  # a newer good snapshot replaced it
        return sched or self._problem

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

    def usable(self) -> tuple[list[Manifest], bool]:
        """The snapshots worth trying, best first: the one the pointer names, then the others
        newest first, none of them marked bad. Second: whether the cluster has any snapshot
        at all (False: it never had one; True with an empty list: every one is bad). A pointer
        naming a snapshot that is not in the bucket any more is marked bad here."""
        pointer = self.consul.snapshot_pointer()
        bad = self.consul.bad_snapshots()
        stored = self.store.manifests()
        if pointer is not None and pointer.get("id") not in {m.id for m in stored} \
                and not pointer.get("bad"):
            self.mark_bad(str(pointer.get("id")), "its manifest is missing from the bucket")
            bad[str(pointer.get("id"))] = {}
        first = str(pointer["id"]) if pointer is not None and not pointer.get("bad") else ""
        good = sorted((m for m in stored if m.id not in bad),
                      key=lambda m: (m.id == first, m.id), reverse=True)
        return good, pointer is not None or bool(stored)

    def mark_bad(self, snapshot_id: str, why: str) -> None:
        """Every node skips it from now on, and the schedule replaces it at once."""
        log.error("snapshot %s is unusable and is marked bad in Consul: %s. A new snapshot is "
                  "taken at once; retention deletes this one", snapshot_id, why)
        self._problem = f"snapshot {snapshot_id} was found unusable and marked bad: {why}"[:500]
        self._bad_id = snapshot_id
        try:
            self.consul.mark_snapshot_bad(snapshot_id, why, self.s.node_name)
        except DCSError as exc:
            log.warning("could not mark snapshot %s bad in Consul (%s): the next node to try "
                        "it finds out again", snapshot_id, exc)

    # --- provisioning (daemon, before mysqld starts) --------------------------------------------

    def provision_empty(self, publish: Callable[[str, str], None],
                        stop: threading.Event, galera_uuid: Callable[[], str] | None = None
                        ) -> bool:
        """First boot of a node in a cluster that has a snapshot: restore it. Returns False
        when the node must initialize an empty server instead: the cluster has no snapshot (it
        copies everything by replication; on Galera it joins by a full state transfer), on
        Galera when no snapshot is of the cluster `galera_uuid()` names (Consul's record; ""
        for a cluster not created yet), or when every snapshot is unusable and no live node
        can be copied.

        A snapshot that cannot be restored by anyone (missing or corrupt object:
        SnapshotCorrupt) is marked bad and the next good one is tried, then a copy of a live
        replica (replication; Galera's state transfer is that copy). Any other failure (S3
        unreachable, bad credentials) is retried every RESTORE_RETRY seconds, the node
        unhealthy with the cause meanwhile: it never falls back to an empty server while a
        good snapshot may exist."""
        while not stop.is_set():
            try:
                return self._provision(publish, galera_uuid)
            except (SnapshotError, DCSError) as exc:
                log.error("cannot provision this node from a snapshot (retrying in %.0fs; the "
                          "data directory is left empty): %s", RESTORE_RETRY, exc)
                publish("restore failed", f"restore failed: {exc}")
                stop.wait(RESTORE_RETRY)
        return True

    def _provision(self, publish: Callable[[str, str], None],
                   galera_uuid: Callable[[], str] | None) -> bool:
        datadir = self.s.datadir
        usable, any_snapshot = self.usable()
        if not any_snapshot:
            log.info("the cluster has no snapshot yet: " + (
                "this node joins by a full state transfer" if self.galera else
                "initializing an empty server (it copies everything from the primary "
                "by replication)"))
            return False
        if self.galera:
            cluster = galera_uuid() if galera_uuid else ""
            ours = [m for m in usable if cluster and m.galera_uuid == cluster]
            if usable and not ours:
                log.warning("no snapshot is of this Galera cluster (%s; the newest is of %s): "
                            "this node joins by a full state transfer", cluster or
                            "not created yet", usable[0].galera_uuid or "(none)")
                return False
            usable = ours
        for m in usable:
            if dd.inspect(datadir) == dd.DataDirState.INTERRUPTED:
                log.warning("an earlier restore or first boot was interrupted: wiping it")
                dd.wipe_interrupted(datadir)
            log.info("first boot: restoring snapshot %s (GTID %s, %d MiB, taken on %s) "
                     "from %s", m.id, m.gtid, m.stored_bytes >> 20, m.node, self.store.where)
            publish(f"restoring snapshot {m.id}", "")
            try:
                restore_datadir(*from_snapshot(self.store, m), datadir,
                                self._publisher(publish, m), galera=self.galera)
                return True
            except SnapshotCorrupt as exc:
                self.mark_bad(m.id, str(exc))
                publish("restore failed", f"snapshot {m.id} is unusable, trying the next "
                        f"source: {exc}")
        if self.galera:
            log.warning("no usable snapshot of this Galera cluster: this node joins by a full "
                        "state transfer from a live member")
            return False
        return self._copy_live_node(publish)

    def _copy_live_node(self, publish: Callable[[str, str], None]) -> bool:
        """No snapshot can be restored: copy a live node (a healthy replica first)."""
        _, members = self.consul.members()
        leader = self.consul.cluster_state().leader
        donors = copy_sources(members, self.s.node_name, leader.node if leader else None)
        if not donors:
            log.warning("no usable snapshot and no healthy node to copy: initializing an empty "
                        "server (it copies everything from the primary by replication; if the "
                        "primary purged binary logs it needs, it is rebuilt from a copy once a "
                        "node can serve one)")
            return False
        errors = []
        for node, address in donors:
            fetch, what = from_node(f"http://{address}:{self.s.health_port}",
                                    self.s.repl_password, self.s.node_name, node)
            log.info("first boot: no usable snapshot, copying %s", node)
            publish(f"copying {node} (no usable snapshot)", "")
            try:
                restore_datadir(fetch, what, self.s.datadir)
                return True
            except SnapshotError as exc:
                log.error("the copy of %s failed: %s", node, exc)
                errors.append(f"{node}: {exc}")
        raise SnapshotError("no usable snapshot, and every copy of a live node failed: "
                            + "; ".join(errors))

    def for_rebuild(self, newer_than: str | None) -> tuple[Manifest | None, str]:
        """The snapshot a rebuild can use, or None and why not. `newer_than`: a node behind
        the primary's purged binary logs needs one newer than its own position."""
        try:
            usable, any_snapshot = self.usable()
        except (SnapshotError, DCSError) as exc:
            return None, f"the snapshots cannot be read ({exc})"
        if not usable:
            return None, ("every snapshot is marked bad" if any_snapshot
                          else "the cluster has no snapshot")
        m = usable[0]
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

    def verify(self, m: Manifest, progress: Progress | None = None,
               skip_when_short: bool = True) -> str:
        """Verify `m` in scratch space on the data volume (the container's /tmp is often a
        small tmpfs, and a restore of the whole data set must fit where the data fits). When
        the volume cannot hold a second copy above DISK_MIN_FREE, the snapshot is not
        verified, and that is said (`skip_when_short`; else SnapshotError): a verification
        must never fill the volume mysqld writes to."""
        # the unpacked copy, the redo log --prepare creates and the throwaway server's files
        # (VERIFY_HEADROOM): never so close to DISK_MIN_FREE that the node counts as full
        need = int(m.raw_bytes * 1.1) + VERIFY_HEADROOM + self.s.disk_min_free
        free = shutil.disk_usage(self.s.datadir).free
        if free < need:
            text = (f"snapshot {m.id} NOT verified: the data volume has {format_size(free)} "
                    f"free, a verification needs {format_size(need)} (the snapshot's "
                    f"{format_size(m.raw_bytes)} unpacked, 512 MiB of headroom, plus "
                    "DISK_MIN_FREE). Make room, or "
                    "run `autopilot-mysql backup verify` where there is")
            if not skip_when_short:
                raise SnapshotError(text)
            log.warning("%s", text)
            return text
        return verify_snapshot(self.store, m, progress, scratch_parent=self.s.datadir / SCRATCH)


def forget_verify_scratch(datadir: Path) -> None:
    """At start: a verification killed halfway left its scratch copy on the data volume."""
    scratch = datadir / SCRATCH
    if scratch.exists():
        log.warning("removing the scratch copy a snapshot verification left in %s", scratch)
        shutil.rmtree(scratch, ignore_errors=True)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def verify_snapshot(store: SnapshotStore, m: Manifest, progress: Progress | None = None,
                    scratch_parent: Path | None = None) -> str:
    """Restore `m` into a scratch directory (under `scratch_parent`, the data volume's
    SCRATCH directory; None: the system's temporary directory), start a throwaway mysqld on
    it, read every row of every table (InnoDB checks each page it reads) and check the GTID
    position; return a one-line summary or raise SnapshotError. No read timeout: a table
    larger than any timeout is read to its end. A mismatch with the manifest raises
    SnapshotCorrupt."""
    if scratch_parent is not None:
        scratch_parent.mkdir(exist_ok=True)
        osuser.give(scratch_parent)
    scratch = Path(tempfile.mkdtemp(prefix="apm-verify-", dir=scratch_parent))
    result: list[str] = []
    try:
        target = scratch / "data"
        snapshot.extract(store, m, target, progress)
        snapshot.chown_tree(scratch)

        def check(sock: Path) -> None:
            srv = LocalServer(sock, connect_timeout=2, read_timeout=None)
            try:
                tables = srv.execute(
                    "SELECT table_schema, table_name FROM information_schema.tables WHERE "
                    "table_type = 'BASE TABLE' AND table_schema NOT IN "
                    "('information_schema', 'performance_schema', 'sys')")
                rows = 0
                for schema, name in tables:
                    rows += int(srv.execute(
                        f"SELECT COUNT(*) FROM {_quote(schema)}.{_quote(name)}")[0][0])
                srv.execute("SET GLOBAL gtid_slave_pos = %s", (m.gtid,))
                pos = str(srv.execute("SELECT @@gtid_current_pos")[0][0] or "")
                if pos != m.gtid:
                    raise SnapshotCorrupt(f"the restored server reports GTID position {pos!r}, "
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
