"""RestartPolicy bookkeeping, replayed against a scripted clock."""

from __future__ import annotations

from autopilot_mysql.process import RestartPolicy, describe_status


def test_backoff_doubles_then_gives_up_within_window() -> None:
    p = RestartPolicy(max_restarts=3, window=60, first_backoff=0.5, max_backoff=30)
    assert p.record_failure(0) == 0.5
    assert p.record_failure(1) == 1.0
    assert p.record_failure(2) == 2.0
    assert p.record_failure(3) is None  # a fourth failure within 60 s: stay down


def test_old_failures_leave_the_window() -> None:
    p = RestartPolicy(max_restarts=2, window=10)
    p.record_failure(0)
    p.record_failure(1)
    assert p.record_failure(20) == 0.5  # the first two are older than the window


def test_backoff_is_capped() -> None:
    p = RestartPolicy(max_restarts=100, window=1e9, first_backoff=1, max_backoff=8)
    delays = [p.record_failure(float(i)) for i in range(6)]
    assert delays == [1, 2, 4, 8, 8, 8]


def test_exit_descriptions() -> None:
    assert describe_status(-9) == "killed by SIGKILL"
    assert describe_status(1) == "exited with status 1"


def test_json_log_lines() -> None:
    import json
    import logging

    from autopilot_mysql.utils import JsonFormatter

    rec = logging.LogRecord("autopilot_mysql.daemon", logging.INFO, __file__, 1,
                            "promote: %s", ("opening for writes",), None)
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["level"] == "info" and doc["logger"] == "autopilot_mysql.daemon"
    assert doc["msg"] == "promote: opening for writes" and doc["ts"].endswith("Z")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(") ")[2].split()[0] != "Z"
    except OSError:
        return False


def test_a_helper_in_a_group_of_its_own_goes_with_the_child() -> None:
    """A Galera SST script runs socat under `timeout`, which puts it in a process group of its
    own: killing mysqld's group left it listening on the SST port, and the next join failed
    ("Error while getting data from donor node: exit codes: 1 0")."""
    import sys
    import time
    from pathlib import Path
    from tempfile import TemporaryDirectory

    from autopilot_mysql.events import EventBus
    from autopilot_mysql.process import ManagedProcess, session_members

    with TemporaryDirectory() as tmp:
        pidfile = Path(tmp) / "helper"
        script = ("import subprocess, sys, time; p = subprocess.Popen(['sleep', '60'], "
                  "process_group=0, stdout=subprocess.DEVNULL); "
                  f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)")
        for how in ("stop", "exit"):
            pidfile.unlink(missing_ok=True)
            m = ManagedProcess("child", [sys.executable, "-c", script if how == "stop" else
                                         script.replace("time.sleep(60)", "sys.exit(3)")],
                               bus=EventBus())
            m.start()
            deadline = time.monotonic() + 10
            while not pidfile.exists() or not pidfile.read_text():
                assert time.monotonic() < deadline, "the helper never started"
                time.sleep(0.02)
            helper = int(pidfile.read_text())
            leader = m._proc.pid  # type: ignore[union-attr]
            assert helper in session_members(leader)
            if how == "stop":
                m.stop(5)  # the child's group and the helper's
            else:
                m._proc.wait(5)  # type: ignore[union-attr]
                assert _alive(helper)  # the child exited; its helper lives on ...
                m.start()  # ... until the next start reaps it (a stop of an exited child
                m.stop(5)  # reaps the new run's)
            deadline = time.monotonic() + 5
            while _alive(helper):
                assert time.monotonic() < deadline, f"{how}: the helper outlived its child"
                time.sleep(0.02)
