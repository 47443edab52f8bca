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
