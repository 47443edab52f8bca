"""initdb.py's once-per-cluster rule, with Consul's check-and-set played by a dict and the
scripts' runner replaced (the real runs are in tests/integration)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from autopilot_mysql import initdb
from autopilot_mysql.initdb import InitDb, scripts


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
    first = InitDb(tmp_path, node="db1", socket=Path("/s"), database="app", read=key.read,
                   write=key.write)
    first.primary_open()
    wait_state(first, "done")
    assert ran == ["01-a.sql@app", "02-b.sh@app"]
    assert key.doc is not None and key.doc["state"] == "done" and key.doc["by"] == "db1"
    first.primary_open()  # settled: not even a look
    second = InitDb(tmp_path, node="db2", socket=Path("/s"), database="app", read=key.read,
                    write=key.write)
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
    db = InitDb(tmp_path, node="db1", socket=Path("/s"), database="", read=key.read,
                write=key.write)
    db.primary_open()
    wait_state(db, "failed")
    assert key.doc is not None and key.doc["state"] == "failed"
    assert key.doc["file"] == "02-b.sql" and "already exists" in str(key.doc["error"])
    other = InitDb(tmp_path, node="db2", socket=Path("/s"), database="", read=key.read,
                   write=key.write)
    monkeypatch.setattr(initdb, "run_file", lambda *a: pytest.fail("ran again"))
    other.primary_open()
    assert other.state.startswith("failed on db1 (02-b.sql")
    # A run this node left halfway (it died): said, not run again.
    key.doc = {"state": "running", "by": "db3", "at": "t"}
    again = InitDb(tmp_path, node="db3", socket=Path("/s"), database="", read=key.read,
                   write=key.write)
    again.primary_open()
    assert again.state.startswith("interrupted")
