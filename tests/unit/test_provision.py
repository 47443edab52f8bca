"""The all-or-nothing paths of provisioning, without S3 or MariaDB: a restore whose download
fails leaves the data directory as it was (rebuild) or empty (first boot), and a rebuild killed
halfway is undone at the next start."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import pytest

from autopilot_mysql.backup import provision
from autopilot_mysql.backup.store import Manifest
from autopilot_mysql.exceptions import SnapshotError
from autopilot_mysql.mysql import datadir as dd
from autopilot_mysql.mysql import wsrep

M = Manifest(id="20260101T000000Z-db1", node="db1", role="replica", primary="db2", gtid="0-1-5",
             binlog_file="mysql-bin.000001", server_version="10.11", started_at=0.0,
             finished_at=1.0, raw_bytes=10, stored_bytes=10, sha256="0" * 64, s3_checksum="x-1")


class UnreachableStore:
    where = "s3://test/"

    def download(self, m: Manifest, sink: IO[bytes], progress: object = None) -> None:
        sink.write(b"\x28\xb5\x2f\xfd")  # the start of a zstd frame, then the link drops
        raise SnapshotError("download of snapshot failed: connection reset")


def old_datadir(path: Path) -> set[str]:
    (path / "mysql").mkdir(parents=True)
    (path / "mysql" / "user.frm").write_text("x")
    (path / "ibdata1").write_text("data")
    (path / dd.DONE).write_text("initialized")
    dd.write_node_state(path, {"server_id": 7})
    return {p.name for p in path.iterdir()}


def test_failed_rebuild_puts_the_old_data_back(tmp_path: Path) -> None:
    before = old_datadir(tmp_path)
    with pytest.raises(SnapshotError, match="empty again.*connection reset"):
        provision.rebuild_datadir(*provision.from_snapshot(UnreachableStore(), M), tmp_path)  # type: ignore[arg-type]
    assert {p.name for p in tmp_path.iterdir()} == before
    assert (tmp_path / "ibdata1").read_text() == "data"
    assert dd.read_node_state(tmp_path)["server_id"] == 7


def test_failed_first_boot_restore_leaves_only_the_state_file(tmp_path: Path) -> None:
    dd.write_node_state(tmp_path, {"server_id": 9})
    with pytest.raises(SnapshotError):
        provision.restore_datadir(*provision.from_snapshot(UnreachableStore(), M), tmp_path)  # type: ignore[arg-type]
    assert {p.name for p in tmp_path.iterdir()} == {dd.STATE}
    assert dd.inspect(tmp_path) == dd.DataDirState.EMPTY


def test_rebuild_killed_halfway_is_undone_at_start(tmp_path: Path) -> None:
    before = old_datadir(tmp_path)
    # What a kill during the restore leaves: the old data aside, a partial restore beside it.
    aside = tmp_path / provision.ASIDE
    aside.mkdir()
    for p in list(tmp_path.iterdir()):
        if p.name not in (dd.STATE, provision.ASIDE):
            p.rename(aside / p.name)
    dd.mark_pending(tmp_path, "restore")
    (tmp_path / provision.STAGING).mkdir()
    (tmp_path / provision.STAGING / "ibdata1").write_text("partial")
    assert provision.recover_interrupted_rebuild(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == before
    assert (tmp_path / "ibdata1").read_text() == "data"
    assert dd.inspect(tmp_path) == dd.DataDirState.INITIALIZED
    assert not provision.recover_interrupted_rebuild(tmp_path)  # nothing left to undo


def test_rebuild_killed_after_the_restore_completed_keeps_the_restore(tmp_path: Path) -> None:
    """Killed in the final delete of the old data: the next start must keep the restored data
    (its DONE marker) and finish the delete, never move the half-deleted old data back."""
    old_datadir(tmp_path)
    aside = tmp_path / provision.ASIDE
    aside.mkdir()
    for p in list(tmp_path.iterdir()):
        if p.name not in (dd.STATE, provision.ASIDE):
            p.rename(aside / p.name)
    (aside / "ibdata1").unlink()  # the delete had begun
    (tmp_path / "ibdata1").write_text("restored")
    (tmp_path / "mysql").mkdir()
    dd.mark_done(tmp_path, "restored from snapshot")
    assert provision.recover_interrupted_rebuild(tmp_path)
    assert (tmp_path / "ibdata1").read_text() == "restored"
    assert not aside.exists() and not (tmp_path / provision.DISCARD).exists()
    assert dd.inspect(tmp_path) == dd.DataDirState.INITIALIZED
    # Killed after the rename, during the delete itself: finished at the next start.
    (tmp_path / provision.DISCARD).mkdir()
    (tmp_path / provision.DISCARD / "ibdata1").write_text("old")
    assert not provision.recover_interrupted_rebuild(tmp_path)
    assert not (tmp_path / provision.DISCARD).exists()
    assert (tmp_path / "ibdata1").read_text() == "restored"


class GaleraBackup:
    """Unpacks into the target what a --galera-info backup holds, as far as a restore looks."""

    def __init__(self, info: str | None) -> None:
        self.info = info

    def fetch(self, target: Path, progress: object) -> str:
        target.mkdir()
        (target / "ibdata1").write_text("data")
        if self.info is not None:
            (target / "xtrabackup_galera_info").write_text(self.info)
        return "0-1-5"


def test_a_galera_restore_leaves_a_grastate_to_join_by_ist(tmp_path: Path) -> None:
    uuid = "30e3e34e-ee24-11f1-88aa-9f096a758e31"
    position = provision.restore_datadir(GaleraBackup(f"{uuid}:4 0\n").fetch, "snapshot x",
                                         tmp_path, galera=True)
    assert position == f"{uuid}:4"
    gs = wsrep.read_grastate(tmp_path)
    assert gs is not None and str(gs.position) == f"{uuid}:4" and not gs.safe_to_bootstrap
    assert dd.inspect(tmp_path) == dd.DataDirState.INITIALIZED


def test_a_galera_restore_without_a_galera_position_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="no Galera position.*--galera-info"):
        provision.restore_datadir(GaleraBackup(None).fetch, "snapshot x", tmp_path,
                                  galera=True)
    assert dd.inspect(tmp_path) == dd.DataDirState.EMPTY
