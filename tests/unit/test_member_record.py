"""dcs.MemberRecord: written when it changes, and again only when the keys stop showing it
after they did (Consul rebuilt from empty), never on a read older than the write."""

from __future__ import annotations

from typing import Any, cast

from autopilot_mysql import keys
from autopilot_mysql.dcs import MemberRecord


class FakeConsul:
    def __init__(self) -> None:
        self.keys = keys.Names("mysql")
        self.written: list[dict[str, str]] = []

    def register_member(self, node: str, doc: dict[str, str]) -> None:
        self.written.append(doc)


def test_written_on_change_and_again_only_once_it_was_seen_and_is_gone() -> None:
    c = FakeConsul()
    m = MemberRecord(cast(Any, c), "db1")
    doc = {"server_id": "1", "address": "10.0.0.1"}
    m.write(doc)
    m.write(dict(doc))  # unchanged: not written again
    assert c.written == [doc]
    assert not m.gone(False)  # a read from before the write: not gone, only not seen yet
    assert not m.gone(True)
    assert m.gone(False)  # seen, and now missing: write it again
    m.write(doc)
    assert c.written == [doc, doc]
    assert not m.gone(False)  # not seen since the new write
    m.forget()  # the catalog forgot us: written at the next chance, changed or not
    m.write(doc)
    assert c.written == [doc, doc, doc]

