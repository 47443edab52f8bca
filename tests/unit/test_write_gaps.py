"""The fault tests' write-gap measure (tests/testbed/workload.longest_gap): the longest time
within a window that no client got an acknowledgement, and where it lies."""

from __future__ import annotations

from tests.testbed.workload import Ack, longest_gap


def acks(*at: float) -> list[Ack]:
    return [Ack("db1", "", t) for t in at]


def test_the_longest_gap_across_clients_is_where_none_of_them_got_an_answer() -> None:
    # one client stuck from 2 to 9, another writing through 5: none answered from 5 to 9
    both = acks(1.0, 2.0, 9.0) + acks(3.0, 5.0)
    assert longest_gap(both, 0.0, 10.0) == (5.0, 9.0)


def test_the_window_edges_count_and_acknowledgements_outside_it_do_not() -> None:
    assert longest_gap(acks(-5.0, 2.0, 30.0), 0.0, 10.0) == (2.0, 10.0)
    assert longest_gap(acks(8.0), 0.0, 10.0) == (0.0, 8.0)
    assert longest_gap([], 0.0, 10.0) == (0.0, 10.0)
