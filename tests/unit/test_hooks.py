"""User hooks (hooks.py), run for real from a temporary directory: which run, with what, in
what order, and what a failure, a time-out or a failing health hook does."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from autopilot_mysql.hooks import Hooks, find
from tests.testbed.util import wait_until


def script(d: Path, name: str, body: str) -> Path:
    p = d / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)
    return p


def wait_for(probe: object, timeout: float) -> bool:
    return bool(wait_until(probe, timeout=timeout, what="the hooks"))  # type: ignore[arg-type]


def hooks(d: Path, **kw: float) -> Hooks:
    h = Hooks(d, cluster="mysql", node="db1", timeout=kw.get("timeout", 5.0),
              health_interval=kw.get("interval", 0.1),
              environ={"PATH": "/usr/bin:/bin", "MARIADB_ROOT_PASSWORD": "secret"})
    h.start()
    return h


def test_which_files_are_hooks(tmp_path: Path) -> None:
    script(tmp_path, "on-role-change", "true")
    script(tmp_path, "on-role-change-10-notify.sh", "true")
    script(tmp_path, "on-role-changes", "true")  # another name, not the event's
    (tmp_path / "on-role-change.txt").write_text("not executable")
    assert [p.name for p in find(tmp_path, "on-role-change")] == [
        "on-role-change", "on-role-change-10-notify.sh"]
    assert find(tmp_path / "missing", "on-start") == []


def test_events_run_in_order_with_their_arguments_and_no_secret(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    for event in ("on-start", "on-role-change", "on-stop"):
        script(tmp_path, event, f'echo "$* prev=$AUTOPILOT_PREVIOUS_ROLE '
                                f'pw=${{MARIADB_ROOT_PASSWORD:-none}}" >> {out}')
    h = hooks(tmp_path)
    h.started()
    h.started()  # the first start only
    h.role_changed("replica")
    h.role_changed("replica")  # unchanged: nothing
    h.role_changed("primary")
    h.stopping(wait=5)
    assert out.read_text().splitlines() == [
        "on-start unknown mysql db1 prev= pw=none",
        "on-role-change replica mysql db1 prev=unknown pw=none",
        "on-role-change primary mysql db1 prev=replica pw=none",
        "on-stop primary mysql db1 prev= pw=none"]


def test_a_failing_or_hanging_hook_is_logged_and_never_blocks(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "calls"
    script(tmp_path, "on-role-change-1", "echo broken >&2; exit 3")
    script(tmp_path, "on-role-change-2", "sleep 30")
    script(tmp_path, "on-role-change-3", f"echo ran >> {out}")
    h = hooks(tmp_path, timeout=0.5)
    t0 = time.monotonic()
    h.role_changed("primary")
    assert time.monotonic() - t0 < 0.1  # the caller never waits
    assert wait_for(lambda: out.exists(), timeout=10)
    assert wait_for(lambda: "killed after" in caplog.text, timeout=10)
    text = caplog.text
    assert "on-role-change-1" in text and "exited 3" in text and "broken" in text
    assert "on-role-change-2" in text and "killed after HOOK_TIMEOUT" in text
    h.stopping(wait=2)


def test_a_failing_health_hook_makes_the_node_unhealthy_until_it_passes(tmp_path: Path) -> None:
    flag = tmp_path / "sick"
    script(tmp_path, "health", f'if [ -e {flag} ]; then echo "replication user locked"; '
                               'exit 1; fi')
    h = hooks(tmp_path)
    assert h.health() == (True, "")
    flag.touch()
    assert wait_for(lambda: not h.health()[0], timeout=10)
    assert "replication user locked" in h.health()[1] and "health" in h.health()[1]
    flag.unlink()
    assert wait_for(lambda: h.health()[0], timeout=10)
    h.stopping(wait=2)
