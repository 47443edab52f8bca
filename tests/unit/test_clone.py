"""The clone request's signature (backup/clone.py): only the cluster's nodes may copy a node,
and an old request is refused. The stream itself runs against real nodes in the
integration tests."""

from __future__ import annotations

from autopilot_mysql.backup import clone


def test_a_signed_request_names_its_asker_and_expires() -> None:
    sig = clone.signature("repl-secret", "db3", now=1000.0)
    assert clone.check("repl-secret", sig, now=1010.0) == "db3"
    assert clone.check("other-secret", sig, now=1010.0) is None
    assert clone.check("repl-secret", sig, now=1000.0 + clone.MAX_SKEW + 1) is None
    stamp, asker, mac = sig.split(":", 2)
    assert clone.check("repl-secret", f"{stamp}:db9:{mac}", now=1010.0) is None  # renamed
    assert clone.check("repl-secret", "garbage", now=1010.0) is None
