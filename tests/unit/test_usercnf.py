"""The user's own MariaDB settings (mysql/usercnf.py): conf.d files and command-line options,
tunables passed, what the supervisor's safety rests on refused with where and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from autopilot_mysql.mysql.usercnf import UserConfigError, check, from_args, read_dirs


def test_tunables_pass_and_protected_settings_are_named_with_file_and_line(
        tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "10-tuning.cnf").write_text(
        "[mysqld]\nmax_connections = 500\ninnodb-buffer-pool-size=2G\n"
        "[client]\nport = 3307\n")  # a client's port is not the server's
    assert check(read_dirs([conf, tmp_path / "missing"])) == []
    (conf / "20-bad.cnf").write_text(
        "# mine\n[mariadbd]\nread_only = OFF\nloose-rpl_semi_sync_master_enabled=1\n"
        "[galera]\nwsrep_cluster_address=gcomm://\n[server]\nskip-log-bin\n"
        "skip-read-only\n")
    problems = check(read_dirs([conf]))
    assert len(problems) == 5, problems
    assert problems[0].startswith(f"{conf / '20-bad.cnf'}:3: read_only is set by "
                                  "autopilot-mysql")
    assert "fencing" in problems[0]
    assert any("rpl_semi_sync_master_enabled" in p and ":4:" in p for p in problems)
    assert any("wsrep_cluster_address" in p for p in problems)
    assert any("skip_log_bin" in p for p in problems)
    assert any("skip_read_only" in p for p in problems)


def test_includes_are_followed(tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    more = tmp_path / "more"
    conf.mkdir()
    more.mkdir()
    (conf / "a.cnf").write_text(f"!includedir {more}\n!include ../b.inc\n")
    (more / "x.cnf").write_text("[mysqld]\nserver_id=7\n")
    (tmp_path / "b.inc").write_text("[mysqld]\ngtid_domain_id=3\n")
    problems = check(read_dirs([conf]))
    assert [p.split(": ")[0] for p in problems] == [f"{more / 'x.cnf'}:2",
                                                    f"{tmp_path / 'b.inc'}:2"]


def test_command_line_options() -> None:
    assert check(from_args(["--max-connections=500", "--skip-name-resolve"])) == []
    problems = check(from_args(["--server-id=9", "--log_bin=OFF"]))
    assert len(problems) == 2 and problems[0].startswith("command line: server_id")
    with pytest.raises(UserConfigError, match="--name=value"):
        from_args(["max-connections=500"])
    with pytest.raises(UserConfigError, match="conf.d"):
        from_args(["--defaults-file=/tmp/my.cnf"])
