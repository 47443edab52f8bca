"""The integration tests' watch for two writable nodes (test_replication.ReadOnlyWatch), on a
scripted timeline: each read of a node's read_only takes one tick, some take many (a busy
machine), and a node is writable in a window of ticks."""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.test_replication import ReadOnlyWatch


def timeline(windows: dict[str, tuple[float, float]], slow: dict[str, int]
             ) -> Callable[[str], bool]:
    """A reader over virtual time: a read of `name` answers as of the tick it starts at, then
    takes 1 tick, or slow[name] ticks."""
    now = [0.0]

    def writable(name: str) -> bool:
        start, end = windows.get(name, (0.0, -1.0))
        answer = start <= now[0] < end
        now[0] += slow.get(name, 1)
        return answer

    return writable


def test_a_handover_read_across_a_slow_pass_is_not_two_writable_nodes() -> None:
    """CI, 2026-12-07, two tests at a time: db1 fenced at .931, db3 opened at .989, and one
    pass read db1 before and db3 after (db2's read was slow). Read once per pass, that was
    two writable nodes; db1 was never writable again."""
    windows = {"db1": (0, 10), "db3": (20, 1000)}  # fenced at 10, the new one opens at 20
    once = timeline(windows, {"db2": 50})
    assert [n for n in ("db1", "db2", "db3") if once(n)] == ["db1", "db3"]  # the old way
    proven, seen = ReadOnlyWatch.sample(["db1", "db2", "db3"], timeline(windows, {"db2": 50}))
    assert proven == ("db3",)
    assert seen == ("db1", "db3")


def test_two_nodes_writable_together_for_longer_than_a_sample_are_caught() -> None:
    windows = {"db1": (0, 100), "db3": (2, 1000)}
    proven, _ = ReadOnlyWatch.sample(["db1", "db2", "db3"], timeline(windows, {}))
    assert proven == ("db1", "db3")
    # whichever order the nodes are read in, once both are writable when the sample begins
    windows = {"db1": (0, 100), "db3": (0, 1000)}
    proven, _ = ReadOnlyWatch.sample(["db3", "db2", "db1"], timeline(windows, {"db2": 30}))
    assert proven == ("db3", "db1")


def test_a_node_writable_in_one_read_only_is_seen_but_not_counted() -> None:
    proven, seen = ReadOnlyWatch.sample(["db1", "db2"], timeline({"db2": (0, 2)}, {}))
    assert proven == () and seen == ("db2",)
