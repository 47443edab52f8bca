"""Data-directory states, including an interrupted first boot."""

from __future__ import annotations

from pathlib import Path

import pytest

from autopilot_mysql.exceptions import DataDirError
from autopilot_mysql.mysql import datadir as dd


def test_states(tmp_path: Path) -> None:
    d = tmp_path / "data"
    assert dd.inspect(d) == dd.DataDirState.EMPTY
    d.mkdir()
    (d / "lost+found").mkdir()
    dd.write_node_state(d, {"server_id": 3})
    assert dd.inspect(d) == dd.DataDirState.EMPTY  # a fresh volume, plus our state file
    (d / dd.PENDING).write_text("x")
    (d / "ibdata1").write_text("half written")
    assert dd.inspect(d) == dd.DataDirState.INTERRUPTED
    dd.wipe_interrupted(d)
    assert sorted(p.name for p in d.iterdir()) == [dd.STATE, "lost+found"]
    assert dd.read_node_state(d) == {"server_id": 3}  # the server_id survives the redo
    (d / "mysql").mkdir()
    assert dd.inspect(d) == dd.DataDirState.ADOPTED
    (d / dd.DONE).write_text("x")
    assert dd.inspect(d) == dd.DataDirState.INITIALIZED


def test_foreign_files_are_unknown(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a database")
    assert dd.inspect(tmp_path) == dd.DataDirState.UNKNOWN


def test_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / dd.STATE).write_text("{not json")
    with pytest.raises(DataDirError, match="server_id"):
        dd.read_node_state(tmp_path)


def test_what_the_state_file_says_about_the_data_goes_with_it(tmp_path: Path) -> None:
    """An errant mark survives a restart (nemesis seed 326437764: forgotten, the node took
    part in the next election), and only new data (a first boot, a restore, a rebuild)
    clears it; the server_id is the node's and stays."""
    dd.write_node_state(tmp_path, {"server_id": 7, "data_id": "old", "last_role": "primary",
                                   "errant": ["0-6-8321"]})
    assert dd.recorded_errant(tmp_path) == ("0-6-8321",)
    dd.mark_done(tmp_path, "restored from a snapshot")
    state = dd.read_node_state(tmp_path)
    assert state["server_id"] == 7 and state["data_id"] not in ("old", "")
    assert "last_role" not in state and dd.recorded_errant(tmp_path) == ()
