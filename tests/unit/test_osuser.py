"""mysql/osuser.py: root (the image's default) or the image's mysql user (Kubernetes'
runAsUser), anything else refused at start with what to set."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest

from autopilot_mysql.exceptions import ConfigError
from autopilot_mysql.mysql import osuser


def as_uid(monkeypatch: pytest.MonkeyPatch, uid: int) -> None:
    monkeypatch.setattr(osuser.os, "geteuid", lambda: uid)
    osuser.admin_user.cache_clear()


@pytest.fixture(autouse=True)
def _fresh() -> object:
    yield
    osuser.admin_user.cache_clear()


def test_root_logs_in_as_root_and_gives_files_to_mysql(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    as_uid(monkeypatch, 0)
    osuser.check()
    assert osuser.admin_user() == "root"
    given = []
    monkeypatch.setattr(osuser.shutil, "chown", lambda p, u, g: given.append((p, u, g)))
    osuser.give(tmp_path)
    assert given == [(tmp_path, "mysql", "mysql")]


def test_the_mysql_user_logs_in_as_mysql_and_chowns_nothing(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    as_uid(monkeypatch, pwd.getpwnam("mysql").pw_uid)
    osuser.check()
    assert osuser.admin_user() == "mysql"
    monkeypatch.setattr(osuser.shutil, "chown", lambda *a: pytest.fail("chown as non-root"))
    (tmp_path / "f").write_text("x")
    osuser.give(tmp_path)
    osuser.give_tree(tmp_path)


def test_any_other_user_is_refused_naming_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    as_uid(monkeypatch, 65534)  # nobody
    with pytest.raises(ConfigError, match="runAsUser: 999"):
        osuser.check()
    as_uid(monkeypatch, 4242421)  # no passwd entry (an arbitrary uid)
    with pytest.raises(ConfigError, match="uid 4242421"):
        osuser.check()
