"""Rendering my.cnf and sizing the buffer pool from cgroup limits (files made in tmp_path)."""

from __future__ import annotations

from pathlib import Path

from autopilot_mysql.mysql.cnf import (
    DEFAULT_POOL,
    buffer_pool_size,
    cgroup_memory_limit,
    render_cnf,
)


def fake_cgroup(tmp_path: Path, proc_line: str, files: dict[str, str]) -> tuple[Path, Path]:
    proc = tmp_path / "cgroup"
    proc.write_text(proc_line + "\n")
    root = tmp_path / "sys"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return proc, root


def test_cgroup_v2_limit_of_own_group(tmp_path: Path) -> None:
    proc, root = fake_cgroup(tmp_path, "0::/docker/abc", {
        "docker/abc/memory.max": str(2 << 30), "docker/memory.max": "max"})
    assert cgroup_memory_limit(proc, root) == 2 << 30


def test_cgroup_v2_tightest_ancestor_wins(tmp_path: Path) -> None:
    proc, root = fake_cgroup(tmp_path, "0::/a/b", {
        "a/b/memory.max": "max", "a/memory.max": str(1 << 30)})
    assert cgroup_memory_limit(proc, root) == 1 << 30


def test_cgroup_v1_unlimited_is_none(tmp_path: Path) -> None:
    proc, root = fake_cgroup(tmp_path, "4:memory:/x", {
        "memory/x/memory.limit_in_bytes": "9223372036854771712"})
    assert cgroup_memory_limit(proc, root) is None


def test_no_cgroup_info_is_none(tmp_path: Path) -> None:
    assert cgroup_memory_limit(tmp_path / "missing", tmp_path) is None


def test_pool_sizes() -> None:
    assert buffer_pool_size(512 << 20, 4 << 30)[0] == 512 << 20  # setting wins
    size, why = buffer_pool_size(None, 2 << 30)
    assert size == 1 << 30 and "half" in why
    assert buffer_pool_size(None, 40 << 20)[0] == 32 << 20  # floor
    assert buffer_pool_size(None, None)[0] == DEFAULT_POOL  # never the host's memory


def test_rendered_cnf_has_identity_gtid_and_fence() -> None:
    text = render_cnf(datadir=Path("/var/lib/mysql"), rundir=Path("/run/mysqld"),
                      server_id=7, report_host="db7", pool_size=256 << 20, pool_reason="test")
    for line in ("server_id                      = 7", "report_host                    = db7",
                 "read_only                      = ON", "gtid_strict_mode               = ON",
                 "log_bin                        = mysql-bin",
                 "innodb_buffer_pool_size        = 256M",
                 "socket                         = /run/mysqld/mysqld.sock"):
        assert line in text
    assert "${" not in text and "skip-slave-start" in text
    assert "rpl_semi_sync_master_wait_point    = AFTER_SYNC" in text
    # MariaDB never falls back to asynchronous by itself (election.I3: the supervisor does,
    # once Consul records it), whatever SEMI_SYNC_TIMEOUT is.
    assert f"rpl_semi_sync_master_timeout       = {2**64 - 1}" in text
