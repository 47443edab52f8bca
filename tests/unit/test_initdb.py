"""initdb.py's once-per-cluster rule, with Consul's check-and-set played by a dict and the
scripts' runner replaced (the real runs are in tests/integration)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from autopilot_mysql import initdb
from autopilot_mysql.initdb import InitDb, scripts
from autopilot_mysql.mysql import datadir as dd


class Key:
    def __init__(self) -> None:
        self.index, self.doc = 0, None  # type: int, dict[str, object] | None

    def read(self) -> tuple[int, dict[str, object] | None]:
        return self.index, self.doc

    def write(self, doc: dict[str, object], index: int) -> bool:
        if index != self.index:
            return False
        self.index, self.doc = self.index + 1, dict(doc)
        return True


def born_empty(tmp_path: Path, name: str = "data") -> Path:
    """A data directory as datadir.initialize leaves it: the scripts are due on it."""
    d = tmp_path / name
    dd.mark_done(d, "initialized", born_empty=True)
    return d


def files(d: Path, *names: str) -> None:
    d.mkdir(exist_ok=True)
    for n in names:
        (d / n).write_text("SELECT 1;\n")


def test_only_known_kinds_in_name_order(tmp_path: Path) -> None:
    files(tmp_path, "02-b.sql.gz", "01-a.sql", "03-c.sh", "README.md", "04-d.sql.zst")
    assert [p.name for p in scripts(tmp_path)] == ["01-a.sql", "02-b.sql.gz", "03-c.sh",
                                                   "04-d.sql.zst"]
    assert scripts(tmp_path / "missing") == []


def wait_state(db: InitDb, want: str) -> None:
    t0 = time.monotonic()
    while not db.state.startswith(want):
        assert time.monotonic() - t0 < 5, db.state
        time.sleep(0.01)


def test_run_once_claimed_first_and_never_again(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    files(tmp_path, "01-a.sql", "02-b.sh")
    ran: list[str] = []
    monkeypatch.setattr(initdb, "run_file", lambda p, s, d: ran.append(f"{p.name}@{d}"))
    key = Key()
    first = InitDb(tmp_path, node="db1", socket=Path("/s"), database="app",
                   datadir=born_empty(tmp_path / "1"), read=key.read, write=key.write)
    first.primary_open()
    wait_state(first, "done")
    assert ran == ["01-a.sql@app", "02-b.sh@app"]
    assert key.doc is not None and key.doc["state"] == "done" and key.doc["by"] == "db1"
    first.primary_open()  # settled: not even a look
    second = InitDb(tmp_path, node="db2", socket=Path("/s"), database="app",
                    datadir=born_empty(tmp_path / "2"), read=key.read, write=key.write)
    second.primary_open()
    assert ran == ["01-a.sql@app", "02-b.sh@app"] and second.state == "done"


def test_a_failure_stops_the_rest_and_nobody_runs_them_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files(tmp_path, "01-a.sql", "02-b.sql", "03-c.sql")

    def run(p: Path, s: Path, d: str) -> None:
        if p.name == "02-b.sql":
            raise RuntimeError("exited 1: ERROR 1050 (42S01): Table 't' already exists")

    monkeypatch.setattr(initdb, "run_file", run)
    key = Key()
    db = InitDb(tmp_path, node="db1", socket=Path("/s"), database="",
                datadir=born_empty(tmp_path / "1"), read=key.read, write=key.write)
    db.primary_open()
    wait_state(db, "failed")
    assert key.doc is not None and key.doc["state"] == "failed"
    assert key.doc["file"] == "02-b.sql" and "already exists" in str(key.doc["error"])
    other = InitDb(tmp_path, node="db2", socket=Path("/s"), database="",
                   datadir=born_empty(tmp_path / "2"), read=key.read, write=key.write)
    monkeypatch.setattr(initdb, "run_file", lambda *a: pytest.fail("ran again"))
    other.primary_open()
    assert other.state.startswith("failed on db1 (02-b.sql")
    # A run this node left halfway (it died): said, not run again.
    key.doc = {"state": "running", "by": "db3", "at": "t"}
    again = InitDb(tmp_path, node="db3", socket=Path("/s"), database="",
                   datadir=born_empty(tmp_path / "3"), read=key.read, write=key.write)
    again.primary_open()
    assert again.state.startswith("interrupted")
    assert "rerun" in again.state


def test_scripts_belong_to_the_initialization_of_data_born_empty(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
        ) -> None:
    """As the official image: a new cluster born with no scripts records that, and scripts
    added later are named, never run; data that was not born empty here (adopted, restored,
    or a cluster from before this release) records skipped; a wiped key does not run them
    again on the node that initialized; the operator's rerun does."""
    d = tmp_path / "initdb.d"
    d.mkdir()
    monkeypatch.setattr(initdb, "run_file", lambda *a: pytest.fail("ran"))
    key = Key()
    data = born_empty(tmp_path)
    empty = InitDb(d, node="db1", socket=Path("/s"), database="", datadir=data,
                   read=key.read, write=key.write)
    empty.primary_open()
    assert key.doc is not None and key.doc["state"] == "done" and key.doc["files"] == []
    assert "initdb_due" not in dd.read_node_state(data)
    files(d, "01-dump.sql")
    later = InitDb(d, node="db2", socket=Path("/s"), database="", datadir=born_empty(
        tmp_path, "data2"), read=key.read, write=key.write)
    later.primary_open()
    assert later.state == "done" and "01-dump.sql are not run" in caplog.text
    assert '{"state": "rerun"}' in caplog.text
    # Data restored from a snapshot (mark_done without born_empty), no key: skipped.
    old = Key()
    restored = tmp_path / "restored"
    dd.mark_done(restored, "restored")
    existing = InitDb(d, node="db3", socket=Path("/s"), database="", datadir=restored,
                      read=old.read, write=old.write)
    existing.primary_open()
    assert old.doc is not None and old.doc["state"] == "skipped"
    assert existing.state == "skipped" and "held data already" in caplog.text
    # Consul's data wiped after the initialization ran: the node that ran them has no flag.
    wiped = Key()
    again = InitDb(d, node="db1", socket=Path("/s"), database="", datadir=data,
                   read=wiped.read, write=wiped.write)
    again.primary_open()
    assert wiped.doc is not None and wiped.doc["state"] == "skipped"
    # The operator asks for them again: run by whoever is primary, due or not.
    ran: list[str] = []
    monkeypatch.setattr(initdb, "run_file", lambda p, s, db: ran.append(p.name))
    wiped.doc = {"state": "rerun"}
    rerun = InitDb(d, node="db3", socket=Path("/s"), database="", datadir=restored,
                   read=wiped.read, write=wiped.write)
    rerun.primary_open()
    wait_state(rerun, "done")
    assert ran == ["01-dump.sql"] and wiped.doc["files"] == ["01-dump.sql"]


def test_first_boot_marks_the_scripts_due_and_a_restore_drops_it(tmp_path: Path) -> None:
    data = born_empty(tmp_path)
    assert dd.read_node_state(data)["initdb_due"] is True
    dd.mark_done(data, "restored from a snapshot")
    assert "initdb_due" not in dd.read_node_state(data)
