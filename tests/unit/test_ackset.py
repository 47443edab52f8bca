"""The primary's keeper of the acknowledgement set (ackset.AckSetKeeper), against a Consul
that checks indexes as the real one does and a MariaDB that only keeps the semi-sync state:
the keeper's own writes must carry it when the cycle's read is older than they are."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from autopilot_mysql.ackset import AckSetKeeper
from autopilot_mysql.election import SyncState
from autopilot_mysql.model import Member
from autopilot_mysql.mysql.server import PrimaryState
from tests.unit.fakes import FakeClock


class IndexedConsul:
    """The sync key with Consul's check-and-set: a write names the index it read, and each
    write gets a higher index (the index is shared by every key, as Consul's Raft index)."""

    def __init__(self) -> None:
        self.index = 0
        self.stored: SyncState | None = None
        self.refused = 0

    def write_sync(self, session: str, sync: SyncState) -> SyncState | None:
        if sync.index != (self.stored.index if self.stored else 0):
            self.refused += 1
            return None
        self.index += 7  # other keys are written in between
        self.stored = replace(sync, index=self.index)
        return self.stored


@dataclass
class Vars:
    position: str = "0-3-10"


@dataclass
class Primary:
    """What the keeper asks of the local MariaDB."""

    attached: set[str] = field(default_factory=set)
    semi_sync: bool = False
    position: str = "0-3-10"

    def primary_state(self) -> PrimaryState:
        return PrimaryState(self.semi_sync, 0, 0, self.position)

    def attached_replicas(self) -> set[str]:
        return set(self.attached)

    def set_semi_sync_primary(self, on: bool) -> None:
        self.semi_sync = on

    def shut_out_addresses(self, user: str) -> list[str]:
        return []

    def vars(self) -> Vars:
        return Vars(self.position)


class Statuses:
    """Each replica's own /status, as the peers' poller keeps it."""

    def __init__(self, docs: dict[str, dict[str, Any]]) -> None:
        self.docs = docs

    def want(self, addresses: object) -> None:
        pass

    def poke(self) -> None:
        pass

    def status(self, node: str, max_age: float) -> dict[str, Any] | None:
        return self.docs.get(node)


def keeper_with_two_replicas() -> tuple[AckSetKeeper, IndexedConsul, Primary]:
    consul = IndexedConsul()
    mysql = Primary(attached={"db1", "db2"})
    docs = {n: {"data_id": f"d{n[-1]}", "leader": "db3", "gtid_current_pos": "0-3-10"}
            for n in ("db1", "db2")}
    keeper = AckSetKeeper(node="db3", consul=consul, mysql=mysql,  # type: ignore[arg-type]
                          peers=Statuses(docs), clock=FakeClock(),  # type: ignore[arg-type]
                          repl_user="repl", semi_sync_timeout=10.0, status_max_age=3.0)
    return keeper, consul, mysql


MEMBERS = tuple(Member(n, f"10.0.0.{i}", 3306, f"mysql-{n}", passing=True)
                for i, n in enumerate(("db1", "db2", "db3"), 1))
ADDRESSES = {m.node: m.address for m in MEMBERS}


def test_a_read_older_than_our_own_write_never_undoes_it() -> None:
    """The CI run of 2026-12-07: after a re-promotion the primary's cycles read the set as it
    was before the keeper's first write (a settled primary reads the keys every few seconds;
    its watch was held up by a silent Consul server). Planned on that read, the keeper
    wrote db1 in again with an index Consul had moved past (refused, cycle after cycle) and,
    seeing no member, turned acknowledgements off with db1 and db2 connected: a lost host
    then needed an operator."""
    keeper, consul, mysql = keeper_with_two_replicas()
    first = keeper.start_term("s", "d3", None, {})
    assert first is not None and first.index == consul.index
    stale = first  # every cycle below reads this, the set before the keeper's own writes
    for _ in range(6):
        keeper.tend("s", stale, MEMBERS, ADDRESSES)
    assert consul.refused == 0, "a write named an index older than the keeper's own write"
    assert consul.stored is not None and consul.stored.names == ("db1", "db2")
    assert mysql.semi_sync, "acknowledgements were turned off with two members connected"
    assert consul.stored.synced, "a member holds every commit: the set is synced again"


def test_a_read_newer_than_our_write_wins() -> None:
    """Consul holds a later version of our set than the keeper's copy (written by a former
    run of this keeper, or its write answered without an index): the keeper plans on what
    Consul holds, and its next write names that index."""
    keeper, consul, mysql = keeper_with_two_replicas()
    first = keeper.start_term("s", "d3", None, {"db1": "d1", "db2": "d2"})
    assert first is not None
    mysql.semi_sync = True
    consul.index += 1
    consul.stored = replace(first, members=(("db1", "d1"),), synced=False, index=consul.index)
    keeper.tend("s", consul.stored, MEMBERS, ADDRESSES)
    assert consul.refused == 0
    assert consul.stored.names == ("db1", "db2"), "db2 joins again, over the newer set"
