"""`autopilot-mysql backup now | list | restore SNAPSHOT --target DIR | verify SNAPSHOT`.

Run inside a node's container (it reads the same environment as the supervisor). `now` takes
the cluster-wide snapshot lock like the schedule does, so it never runs beside another
snapshot. SNAPSHOT may be an id from `list` or `latest` (what the cluster's pointer names).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from .backup import pitr
from .backup.scheduler import pointer_of
from .backup.snapshot import extract, read_galera_position
from .backup.store import Manifest, Progress, SnapshotStore
from .config import Settings
from .dcs import Consul
from .exceptions import AutopilotError, SnapshotCorrupt, SnapshotError
from .gtid import one as one_gtid
from .model import NodeStatus, Role
from .mysql.datadir import empty_dir
from .snapshots import Snapshots

log = logging.getLogger(__name__)


def _snapshots(s: Settings) -> Snapshots:
    if s.snapshots is None:
        raise SnapshotError("snapshots are not configured: set S3_BUCKET (and S3_ENDPOINT and "
                            "the AWS_* credentials for a non-AWS store)")
    return Snapshots(s, Consul.for_settings(s), cnf=s.rundir / "my.cnf")


@contextmanager
def _bar(total: int | None, what: str) -> Iterator[Progress]:
    """A progress bar on a terminal; nothing in a pipe or a log."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
              file=sys.stderr) as bar:
        def progress(n: int) -> None:
            bar.update(n - bar.n)
        yield progress


@contextmanager
def _steps(total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar of a restore's steps on a terminal; a line per step in a pipe or log."""
    if not sys.stderr.isatty():
        yield lambda text: print(f"  {text}", file=sys.stderr)
        return
    with tqdm(total=total, unit="step", file=sys.stderr) as bar:
        def step(text: str) -> None:
            bar.set_description(text[:60])
            bar.update(1)
        yield step


def _resolve(snaps: Snapshots, ref: str) -> Manifest:
    if ref == "latest":
        m = snaps.latest()
        if m is None:
            raise SnapshotError("the cluster has no snapshot yet (`autopilot-mysql backup now` "
                                "takes one)")
        return m
    return snaps.store.manifest(ref)


def run(s: Settings, cmd: str, ref: str | None, target: str | None,
        fmt: str = "table") -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        snaps = _snapshots(s)
        if cmd == "now":
            return _now(s, snaps)
        if cmd == "list":
            return _list(snaps) if fmt == "table" else _list_doc(snaps, fmt)
        assert ref is not None
        m = _resolve(snaps, ref)
        try:
            if cmd == "restore":
                assert target is not None
                return _restore(snaps, m, Path(target))
            with _bar(m.stored_bytes, f"verify {m.id}") as progress:
                print(snaps.verify(m, progress, skip_when_short=False))
            return 0
        except SnapshotCorrupt as exc:
            snaps.mark_bad(m.id, str(exc))  # the cluster replaces it and never restores it
            raise
    except AutopilotError as exc:
        sys.stderr.write(f"autopilot-mysql backup {cmd}: {exc}\n")
        return exc.exit_code


def _now(s: Settings, snaps: Snapshots) -> int:
    assert s.snapshots is not None
    leader = snaps.consul.cluster_state().leader
    primary = leader.node if leader else ""
    role = Role.PRIMARY if primary == s.node_name else Role.REPLICA
    if snaps.galera and role == Role.PRIMARY:
        raise SnapshotError(f"{s.node_name} is the Galera writer, which never takes a snapshot "
                            "(mariabackup desyncs the node while it blocks DDL, and a writer "
                            "that is not Synced gives up the writer role): run it on a reader")
    looked = time.monotonic()

    def status() -> NodeStatus:
        # Galera: the writer role can come to this node while the backup runs; the schedule
        # then abandons it (scheduler._now_writer), so look again, at most once a second
        nonlocal looked, role
        if snaps.galera and time.monotonic() - looked >= 1.0:
            looked = time.monotonic()
            try:
                now = snaps.consul.cluster_state().leader
                role = Role.PRIMARY if now and now.node == s.node_name else Role.REPLICA
            except AutopilotError:
                pass  # Consul unreachable: no new writer can be elected through it either
        return NodeStatus(node=s.node_name, role=role, leader=primary)

    with _bar(None, "snapshot") as progress:
        sched = snaps.make_scheduler(status, lambda: (), threading.Event(), progress)
        m = sched.run_once("requested with `autopilot-mysql backup now`", status().role,
                           force=True)
    if m is None:
        if "abandoned" in sched.state:
            why = (f"{s.node_name} became the Galera writer while it ran: run it again on a "
                   "reader")
        elif holder := snaps.consul.snapshot_lock_holder():
            why = f"{holder} is taking one now (the snapshot lock is held)"
        else:
            why = "see the error above"
        sys.stderr.write(f"autopilot-mysql backup now: no snapshot taken: {why}\n")
        return 1
    print(f"snapshot {m.id}: {m.stored_bytes} bytes stored ({m.raw_bytes} raw), GTID {m.gtid}")
    return 0


def _list_doc(snaps: Snapshots, fmt: str) -> int:
    """`backup list -f json|yaml`: the snapshots, which one is the latest and which are bad,
    and the binary-log archive's state, for scripts."""
    from dataclasses import asdict

    from .clusterview import dump
    pointer = snaps.consul.snapshot_pointer()
    bad = snaps.consul.bad_snapshots()
    _, archive = snaps.consul.archive_state()
    doc = {"where": snaps.store.where,
           "latest": str(pointer["id"]) if pointer else None,
           "snapshots": [{**asdict(m), "bad": bad.get(m.id, {}).get("why")}
                         for m in snaps.store.manifests()],
           "binlog_archive": archive}
    print(dump(doc, fmt))
    return 0


def _list(snaps: Snapshots) -> int:
    pointer = snaps.consul.snapshot_pointer()
    latest = str(pointer["id"]) if pointer else None
    bad = snaps.consul.bad_snapshots()
    ms = snaps.store.manifests()
    if not ms:
        print(f"no snapshots in {snaps.store.where}")
        return 0
    print(f"{'SNAPSHOT':<40} {'NODE':<10} {'ROLE':<8} {'STORED':>9} {'RAW':>9} "
          f"{'AGE':>7}  GTID")
    now = time.time()
    for m in ms:
        age = now - m.finished_at
        age_text = f"{age / 86400:.1f}d" if age > 86400 else f"{age / 3600:.1f}h"
        print(f"{m.id:<40} {m.node:<10} {m.role:<8} {m.stored_bytes >> 20:>7}Mi "
              f"{m.raw_bytes >> 20:>7}Mi {age_text:>7}  {m.gtid}"
              + (f"  BAD ({bad[m.id].get('why', '?')})" if m.id in bad else
                 "  <- latest (new nodes start from it)" if m.id == latest else ""))
    for sid in sorted(set(bad) - {m.id for m in ms}):
        print(f"{sid:<40} marked bad, no manifest left: {bad[sid].get('why', '?')}")
    _, archive = snaps.consul.archive_state()
    if archive:
        written = pitr.when(archive.get("last_time") or 0)
        print(f"binary-log archive: {archive.get('seq', 0)} segment(s), last transaction "
              f"{archive.get('last') or '(none)'} written {written}"
              f"; complete up to {pitr.when(archive.get('checked_at') or 0)} "
              f"({time.time() - float(archive.get('checked_at') or 0):.0f}s ago), archived by "
              f"{archive.get('node', '?')}")
        closed_at = float((pointer or {}).get("finished_at", 0))
        for gap in archive.get("gaps", [])[-3:]:
            print(f"  GAP after {gap.get('after')} (resumed at {gap.get('resumed')}, "
                  f"{pitr.when(gap.get('at') or 0)}): no point-in-time recovery across it"
                  + ("; closed by a later snapshot" if closed_at > float(gap.get("at") or 0)
                     else "; a snapshot is due to close it"))
    if pointer and pointer.get("bad"):
        print(f"the pointer names {latest}, which is BAD: the schedule replaces it at once; "
              "new nodes start from the newest good snapshot meanwhile")
    return 0


def _restore(snaps: Snapshots, m: Manifest, target: Path) -> int:
    if target.exists() and any(target.iterdir()):
        raise SnapshotError(f"{target} is not empty; restore into a new or empty directory")
    created = not target.exists()
    try:
        with _bar(m.stored_bytes, f"restore {m.id}") as progress:
            extract(snaps.store, m, target, progress)
    except BaseException:
        empty_dir(target)
        if created:
            target.rmdir()
        raise
    if snaps.galera or m.galera_uuid:
        pos = read_galera_position(target)
        print(f"restored snapshot {m.id} into {target} (prepared). Its Galera position is "
              f"{pos[0] + ':' + str(pos[1]) if pos else '(not recorded)'}: a node started on "
              "it with that position in grastate.dat (safe_to_bootstrap: 0) joins its cluster "
              "by IST. chown -R mysql:mysql it first.")
        return 0
    print(f"restored snapshot {m.id} into {target} (prepared). Its GTID position is {m.gtid}: "
          f"on a server started on it, SET GLOBAL gtid_slave_pos = '{m.gtid}' before "
          "replicating with MASTER_USE_GTID=slave_pos. chown -R mysql:mysql it first.")
    return 0


def point_in_time(s: Settings, *, to_time: str | None, to_gtid: str | None,
                  target: str | None, dry_run: bool, new_cluster: str | None = None) -> int:
    """`autopilot-mysql restore --to-time T | --to-gtid G --target DIR [--dry-run]
    [--new-cluster NAME]`."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        snaps = _snapshots(s)
        fresh = _new_cluster(s, snaps, new_cluster) if new_cluster else None
        try:
            point = (pitr.Point(gtid=one_gtid(to_gtid)) if to_gtid
                     else pitr.Point(time=pitr.parse_time(to_time or "")))
        except ValueError as exc:
            raise SnapshotError(f"--to-gtid: {exc}") from exc
        usable, _ = snaps.usable()
        _, state = snaps.consul.archive_state()
        plan = pitr.make_plan(usable, snaps.store.segments(), state, point)
        print(plan.text())
        if dry_run:
            return 0
        if not target:
            raise SnapshotError("--target DIR is required (a new or empty directory)")
        where = Path(target)
        created = not where.exists()
        t0 = time.monotonic()
        try:
            with _steps(len(plan.segments) + 1) as progress:
                done = pitr.restore(snaps.store, plan, where, progress)
        except BaseException as exc:
            if not (isinstance(exc, SnapshotError) and "stopped before" in str(exc)):
                empty_dir(where)
                if created:
                    where.rmdir()
            raise
        print(f"{done.summary}, in {time.monotonic() - t0:.1f}s, into {where}. A server "
              "started on it (chown -R mysql:mysql it first) holds the data as of "
              f"{point}")
        if fresh is not None:
            name, consul, store = fresh
            m = pitr.snapshot_for_new_cluster(where, done.position, store, s.node_name)
            store.put_manifest(m)
            session = consul.create_snapshot_session(s.node_name)
            try:
                if not consul.acquire_snapshot_lock(session, s.node_name) or \
                        not consul.set_snapshot_pointer(pointer_of(m), session):
                    raise SnapshotError(f"another process holds {name}'s snapshot lock: "
                                        f"snapshot {m.id} is stored but not named")
            finally:
                consul.release_snapshot_lock(session)
            print(f"new cluster {name}: its first snapshot is {m.id} (GTID {m.gtid}) in "
                  f"{store.where}. Start its nodes with SERVICE_NAME={name} S3_PREFIX={name} "
                  "(and this cluster's S3 and Consul settings): the first restores it and "
                  "becomes the primary, the next ones replicate. This cluster was not touched.")
        return 0
    except AutopilotError as exc:
        sys.stderr.write(f"autopilot-mysql restore: {exc}\n")
        return exc.exit_code


def _new_cluster(s: Settings, snaps: Snapshots, name: str) -> tuple[str, Consul, SnapshotStore]:
    """The Consul keys and bucket prefix of the new cluster `name`, refused if it exists."""
    assert s.snapshots is not None
    if s.topology == "galera":
        raise SnapshotError("--new-cluster is for the replication topology: a new Galera "
                            "cluster cannot start from a restored directory's snapshot (it "
                            "holds no Galera position). Restore with --target and bootstrap a "
                            "node on it by hand")
    if not re.match(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", name) or name == s.service_name:
        raise SnapshotError(f"--new-cluster {name!r}: a DNS label (a-z, 0-9, -) other than "
                            f"this cluster's {s.service_name!r}, as restored-1122")
    consul = Consul.for_settings(s, service=name)
    store = SnapshotStore(replace(s.snapshots, prefix=name))
    if consul.snapshot_pointer() is not None or consul.cluster_state().leader is not None \
            or consul.members()[1] or store.manifests():
        raise SnapshotError(f"cluster {name!r} exists already (in Consul or in "
                            f"{store.where}): choose another name; nothing was written")
    return name, consul, store
