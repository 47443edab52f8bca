"""The admin commands' pure parts: scheduled times, confirmations."""

from __future__ import annotations

import pytest

from autopilot_mysql.admin import _confirm, parse_when
from autopilot_mysql.dcs import scheduled_at


def test_scheduled_times_are_utc_unless_an_offset_is_given_and_never_past() -> None:
    now = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    assert parse_when("2027-01-15T09:00Z", now) == now + 3600
    assert parse_when("2027-01-15 09:00", now) == now + 3600  # naive: UTC
    assert parse_when("2027-01-15T10:00+01:00", now) == now + 3600
    with pytest.raises(ValueError, match="past"):
        parse_when("2027-01-15T07:59Z", now)
    with pytest.raises(ValueError, match="example"):
        parse_when("tonight", now)


def test_a_request_carries_its_time_and_an_unreadable_one_means_now() -> None:
    assert scheduled_at({"from": "db1"}) is None
    at = scheduled_at({"from": "db1", "at": "2027-01-15T09:00:00Z"})
    assert at == 1_800_003_600.0
    assert scheduled_at({"from": "db1", "at": "soon"}) == 0.0


def test_no_terminal_means_no_unless_forced(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert _confirm("Switch over?", force=False) is False
    assert "--force" in capsys.readouterr().err
    assert _confirm("Switch over?", force=True) is True
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda q: "y")
    assert _confirm("Switch over?", force=False) is True
    monkeypatch.setattr("builtins.input", lambda q: "")
    assert _confirm("Switch over?", force=False) is False


def test_version_and_the_formats_of_the_read_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from autopilot_mysql import __version__
    from autopilot_mysql.cli import main
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == \
        f"autopilot-mysql {__version__}"
    for argv in (["status"], ["list"], ["history"], ["backup", "list"], ["config", "show"]):
        with pytest.raises(SystemExit):
            main([*argv, "-f", "xml"])  # refused by argparse: table, json or yaml
        assert "invalid choice: 'xml'" in capsys.readouterr().err, argv
