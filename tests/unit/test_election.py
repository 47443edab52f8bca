"""election.py's invariants, one test (or more) each, named after the invariant they show.
Pure values: positions, acknowledgement sets and what the primary sees of its replicas."""

from __future__ import annotations

from dataclasses import replace

from autopilot_mysql import election
from autopilot_mysql.election import (
    Handover,
    Published,
    ReplicaView,
    Step,
    SyncState,
    SyncTarget,
    Verdict,
)

SYNCED = SyncState(primary="db1", primary_data="d1",
                   members=(("db2", "d2"), ("db3", "d3")), synced=True, hwm="0-1-100")


def pub(node: str, g: str, data: str | None = None, can_apply: bool = True) -> Published:
    return Published(node, g, data if data is not None else f"d{node[-1]}", can_apply)


def elect(me: str, *ps: Published, sync: SyncState | None = SYNCED, **kw: object
          ) -> election.Outcome:
    return election.decide_election(me, {p.node: p for p in ps}, sync, **kw)  # type: ignore[arg-type]


# --- I5(a): every node that may hold an acknowledged commit has published -----------------------

def test_I5a_a_synced_set_needs_every_member_and_never_times_out() -> None:
    out = elect("db2", pub("db2", "0-1-120"), voters_waited=3600.0)
    assert out.verdict == Verdict.WAIT and out.missing == ("db3",)
    assert "db3" in out.reason and "failover --candidate" in out.reason
    assert elect("db2", pub("db2", "0-1-120"), pub("db3", "0-1-110")).verdict == Verdict.TAKE


def test_I5a_an_unsynced_set_needs_the_primary_that_wrote_it() -> None:
    unsynced = SyncState(primary="db1", primary_data="d1", members=(("db2", "d2"),))
    out = elect("db2", pub("db2", "0-1-500"), pub("db3", "0-1-10"), sync=unsynced)
    assert out.verdict == Verdict.WAIT and out.missing == ("db1",)
    # The old primary comes back: it may win (it has everything it acknowledged) ...
    assert elect("db1", pub("db1", "0-1-500"), pub("db2", "0-1-400"),
                 sync=unsynced).verdict == Verdict.TAKE
    # ... or a replica that received everything it had (after its recovery truncated what
    # was never acknowledged) covers it, and wins.
    out = elect("db2", pub("db1", "0-1-490"), pub("db2", "0-1-500"), sync=unsynced)
    assert out.verdict == Verdict.TAKE


def test_I5a_a_member_whose_data_was_replaced_is_not_that_member() -> None:
    """Defect 1: a node restored from an old snapshot (or emptied) under the same name."""
    out = elect("db2", pub("db2", "0-1-120"), pub("db3", "0-1-50", data="fresh"))
    assert out.verdict == Verdict.BLOCKED and "db3" in out.reason and "replaced" in out.reason


def test_I5a_a_position_published_for_an_earlier_term_counts_for_nothing() -> None:
    # Nemesis seed 157636295: db3 published 0-5-4699 in one election, its supervisor was
    # restarted, and that position, still held by its dead session, outlived two terms in
    # which db3 received (and acknowledged) up to 0-6-5853. db1 must wait for db3's new one.
    sync = SyncState(primary="db2", primary_data="d2", members=(("db1", "d1"), ("db3", "d3")),
                     synced=True, index=42)
    assert election.term(sync) == 42 and election.term(None) == 0
    db1 = Published("db1", "0-6-5852", "d1", term=42)
    out = elect("db1", db1, Published("db3", "0-5-4699", "d3", term=17), sync=sync,
                voters_waited=3600.0)
    assert out.verdict == Verdict.WAIT and out.missing == ("db3",)
    out = elect("db1", db1, Published("db3", "0-6-5853", "d3", term=42), sync=sync)
    assert out.verdict == Verdict.DEFER and out.winner == "db3"
    # An unreadable term (an older supervisor's key, or a malformed one) counts for nothing.
    assert elect("db1", db1, Published("db3", "0-6-5853", "d3", term=-1),
                 sync=sync).verdict == Verdict.WAIT


def test_I5a_the_stale_replica_after_a_power_loss_never_wins_alone() -> None:
    """The issue's lost-write history: db3 went down; db1 and db2 kept writing (db3 left the
    set); then everything lost power and only db3 came back. It must wait for db2."""
    after = SyncState(primary="db1", primary_data="d1", members=(("db2", "d2"),),
                      synced=True, hwm="0-1-5400")
    out = elect("db3", pub("db3", "0-1-10"), sync=after, voters_waited=600.0)
    assert out.verdict == Verdict.WAIT and out.missing == ("db2",)
    out = elect("db3", pub("db2", "0-1-5412"), pub("db3", "0-1-10"), sync=after)
    assert out.verdict == Verdict.DEFER and out.winner == "db2"


# --- I5(b)/(c): the winner covers what must be covered, and is the best ------------------------

def test_I5b_the_winner_covers_the_high_water_mark() -> None:
    out = elect("db2", pub("db2", "0-1-90"), pub("db3", "0-1-80"))
    assert out.verdict == Verdict.BLOCKED and "high-water mark 0-1-100" in out.reason


def test_I5b_a_handover_position_must_be_held() -> None:
    h = Handover("db1", "0-1-130", "db2")
    out = elect("db2", pub("db2", "0-1-125"), pub("db3", "0-1-120"), handover=h)
    assert out.verdict == Verdict.BLOCKED and "handover position" in out.reason
    out = elect("db2", pub("db2", "0-1-130"), pub("db3", "0-1-130"), handover=h)
    assert out.verdict == Verdict.TAKE  # the requested target wins the tie


def test_I5b_what_a_node_that_cannot_apply_holds_must_still_be_covered() -> None:
    stuck = pub("db3", "0-1-140", can_apply=False)
    out = elect("db2", pub("db2", "0-1-130"), stuck)
    assert out.verdict == Verdict.BLOCKED and "cannot apply" in out.reason
    assert elect("db2", pub("db2", "0-1-140"), stuck).verdict == Verdict.TAKE


def test_I5c_only_the_best_takes_it_and_ties_go_to_the_lowest_name() -> None:
    assert elect("db2", pub("db2", "0-1-120"), pub("db3", "0-1-121")).verdict == Verdict.DEFER
    assert elect("db3", pub("db2", "0-1-120"), pub("db3", "0-1-121")).verdict == Verdict.TAKE
    assert elect("db2", pub("db2", "0-1-121"), pub("db3", "0-1-121")).verdict == Verdict.TAKE
    assert elect("db3", pub("db2", "0-1-121"), pub("db3", "0-1-121")).verdict == Verdict.DEFER


def test_I5c_among_equals_the_last_primary_keeps_its_role_never_when_behind() -> None:
    """Consul rebuilt from empty (no set, no lock): the old primary, published as such, keeps
    its role if it holds as much as the others; two claiming it, or one behind, change
    nothing; every node reaches the same answer from the same published values."""
    from dataclasses import replace
    db1, db2, db3 = pub("db1", "0-2-300"), pub("db2", "0-2-300"), pub("db3", "0-2-300")
    was = replace(db2, primary=True)
    for me in ("db1", "db2", "db3"):
        out = elect(me, db1, was, db3, sync=None)
        assert out.winner == "db2" or (me == "db2" and out.verdict == Verdict.TAKE), (me, out)
    assert elect("db1", db1, replace(was, gtid="0-2-299"), db3,
                 sync=None).verdict == Verdict.TAKE
    assert elect("db1", replace(db1, primary=True), was, db3,
                 sync=None).verdict == Verdict.TAKE


def test_I5_healthy_voters_beyond_the_required_are_awaited_only_so_long() -> None:
    ps = (pub("db2", "0-1-120"), pub("db3", "0-1-110"))
    assert elect("db2", *ps, voters=("db4",)).verdict == Verdict.WAIT
    assert elect("db2", *ps, voters=("db4",), voters_waited=5.0).verdict == Verdict.TAKE


def test_I5c_a_failover_never_waits_for_the_last_leader_a_consul_rebuild_does() -> None:
    """The last leader is no voter in a failover (it just failed, Consul may still list it
    passing); with no acknowledgement set in Consul although a leader was seen (Consul lost
    its data), the last leader is awaited, listed or not, so that it keeps its role."""
    assert election.awaited_voters(("db1", "db3"), "db1", SYNCED) == ("db3",)
    assert election.awaited_voters(("db3",), "db1", None) == ("db3", "db1")
    assert election.awaited_voters(("db3",), None, None) == ("db3",)  # a new cluster
    # db2, before the old primary db1 published again: it waits, then db1 wins among equals
    db2, db3 = pub("db2", "0-1-300"), pub("db3", "0-1-300")
    voters = election.awaited_voters(("db3",), "db1", None)
    assert elect("db2", db2, db3, sync=None, voters=voters).verdict == Verdict.WAIT
    db1 = replace(pub("db1", "0-1-300"), primary=True)
    out = elect("db2", db1, db2, db3, sync=None, voters=voters)
    assert out.verdict == Verdict.DEFER and out.winner == "db1", out


def test_I5_a_new_cluster_elects_the_best_of_those_present() -> None:
    assert elect("db1", pub("db1", ""), pub("db2", ""), sync=None).verdict == Verdict.TAKE
    assert elect("db2", pub("db1", ""), pub("db2", ""), sync=None).verdict == Verdict.DEFER


# --- I6: the new primary waits out the old lease ---------------------------------------------

def test_I6_the_grace_counts_from_the_last_heartbeat_seen() -> None:
    # Seen at t=10 with a 2 s lease: the old primary fenced itself by 12 at the latest.
    assert election.grace_ends(10.0, 2.0, 0.7) == 12.7


# --- I7: an operator's forced candidate ---------------------------------------------------------

def test_I7_a_forced_candidate_takes_the_lock_without_the_missing_positions() -> None:
    assert elect("db3", pub("db3", "0-1-10"), forced="db3").verdict == Verdict.TAKE
    out = elect("db2", pub("db2", "0-1-120"), forced="db3")
    assert out.verdict == Verdict.DEFER and out.winner == "db3"


# --- I2-I4: the primary's side ------------------------------------------------------------------

def plan(sync: SyncState = SYNCED, *views: ReplicaView, now: float = 100.0, on: bool = True,
         waiting_since: float | None = None, timeout: float = 10.0,
         targets: tuple[SyncTarget, ...] = ()) -> election.Plan:
    return election.plan_sync(sync, {v.node: v for v in views}, now=now, semi_sync_on=on,
                              waiting_since=waiting_since, semi_sync_timeout=timeout,
                              remove_after=3.0, targets=targets)


def member(node: str, received: str = "0-1-200", **kw: object) -> ReplicaView:
    base: dict[str, object] = dict(node=node, data=f"d{node[-1]}", connected=True,
                                   passing=True, follows_us=True, received=received)
    base.update(kw)
    return ReplicaView(**base)  # type: ignore[arg-type]


def test_I2_a_new_replica_joins_before_it_may_acknowledge() -> None:
    p = plan(SYNCED, member("db2"), member("db3"), member("db4"))
    assert (Step.ADD, "db4") in p.steps
    # errant, not following us, failing, or tagged NOFAILOVER: not added
    for bad in (member("db4", errant=True), member("db4", follows_us=False),
                member("db4", passing=False), member("db4", eligible=False)):
        assert (Step.ADD, "db4") not in plan(SYNCED, member("db2"), member("db3"), bad).steps


def test_I4_a_member_away_too_long_is_shut_out_first_and_removed_once_proven() -> None:
    away = member("db3", connected=False, away_since=96.0)
    assert plan(SYNCED, member("db2"), away).steps == ((Step.SHUT_OUT, "db3"),)
    assert plan(SYNCED, member("db2"), member("db3", connected=False, away_since=98.0)).steps == ()
    t = SyncTarget(97.0, "0-1-300", "remove:db3")
    # db2 has not received what db1 had when db3 was shut out: db3 stays a member
    assert plan(SYNCED, member("db2", "0-1-299"), away, targets=(t,)).steps == ()
    assert plan(SYNCED, member("db2", "0-1-300"), away, targets=(t,)).steps == \
        ((Step.REMOVE, "db3"),)


def test_I4_the_proof_never_comes_from_the_member_being_removed() -> None:
    t = SyncTarget(97.0, "0-1-300", "remove:db3")
    still = member("db3", "0-1-400")  # connected again, far ahead: it is not the proof
    assert plan(SYNCED, member("db2", "0-1-10"), still, targets=(t,)).steps == ()


def test_I4_the_last_member_never_leaves() -> None:
    one = SyncState("db1", "d1", (("db2", "d2"),), synced=True)
    away = member("db2", connected=False, away_since=0.0)
    assert all(s != Step.SHUT_OUT for s, _ in plan(one, away).steps)


def test_I3_acknowledging_alone_is_recorded_first() -> None:
    # Commits waited SEMI_SYNC_TIMEOUT for an acknowledgement: unsync (written, then off).
    p = plan(SYNCED, member("db2"), member("db3"), waiting_since=89.0)
    assert (Step.UNSYNC, "") in p.steps and "SEMI_SYNC_TIMEOUT" in p.reason
    assert plan(SYNCED, member("db2"), member("db3"), waiting_since=95.0).steps == ()
    # SEMI_SYNC_TIMEOUT=0: never acknowledge alone
    assert plan(SYNCED, member("db2"), member("db3"), waiting_since=0.0, timeout=0).steps == ()
    # no member at all: acknowledge alone at once (a single-node cluster)
    alone = SyncState("db1", "d1")
    assert plan(alone).steps == ((Step.UNSYNC, ""),)


def test_I3_synced_again_only_once_a_member_provably_received_it() -> None:
    unsynced = SyncState("db1", "d1", (("db2", "d2"),))
    assert plan(unsynced, member("db2"), on=False).steps == ((Step.SEMI_SYNC_ON, ""),)
    t = SyncTarget(99.0, "0-1-300", "sync")
    assert plan(unsynced, member("db2", "0-1-299"), targets=(t,)).steps == ()
    assert plan(unsynced, member("db2", "0-1-300"), targets=(t,)).steps == \
        ((Step.SYNC, "0-1-300"),)
    # a non-member that has it proves nothing
    assert plan(unsynced, member("db2", "0-1-1"), member("db9", "0-1-300", follows_us=False),
                targets=(t,)).steps == ()


def test_I3_with_every_member_gone_for_a_while_acknowledge_alone_without_waiting() -> None:
    gone = (member("db2", connected=False, away_since=90.0),
            member("db3", connected=False, away_since=96.0))
    assert (Step.UNSYNC, "") in plan(SYNCED, *gone).steps
    assert (Step.UNSYNC, "") not in plan(SYNCED, gone[0], member("db3", connected=False,
                                                                 away_since=99.0)).steps
    assert (Step.UNSYNC, "") not in plan(SYNCED, *gone, timeout=0).steps


def test_I8_recovery_keeps_what_only_this_node_may_hold() -> None:
    unsynced = SyncState("db1", "d1", (("db2", "d2"),), synced=False)
    assert not election.may_truncate_unacknowledged(unsynced, "db1", known=True)
    assert not election.may_truncate_unacknowledged(unsynced, "db1", known=True,
                                                    was_primary=True)
    # a replica never truncates (nemesis seed 157636295: the primary and the replica that had
    # acknowledged a commit both truncated it); a former primary that was writable does
    assert not election.may_truncate_unacknowledged(unsynced, "db2", known=True)
    assert not election.may_truncate_unacknowledged(SYNCED, "db2", known=True)
    assert election.may_truncate_unacknowledged(unsynced, "db2", known=True, was_primary=True)
    assert election.may_truncate_unacknowledged(SYNCED, "db1", known=True)
    assert not election.may_truncate_unacknowledged(SYNCED, "db1", known=False)
    assert not election.may_truncate_unacknowledged(None, "db1", known=True)


def test_I3_a_follower_holding_what_the_winner_lacks_is_left_out_of_its_first_set() -> None:
    """Nemesis seed 326437764: such a node is refused as errant; taken in, it stayed a member
    until it was re-provisioned, and every election after waited on its old data."""
    positions = [Published("db1", "0-6-8321", "d1"), Published("db2", "0-2-8320,1-2-4", "d2"),
                 Published("db3", "0-2-8319", "d3"), Published("db4", "garbage", "d4"),
                 Published("db5", "", "d5")]
    members, left_out = election.term_followers("db2", "0-2-8320,1-2-4", positions)
    assert members == {"db3": "d3", "db4": "d4", "db5": "d5"}
    assert list(left_out) == ["db1"] and "0-6-8321" in left_out["db1"]
    # a follower further in the winner's own domain is refused as well
    _, left_out = election.term_followers("db3", "0-2-8319", positions)
    assert sorted(left_out) == ["db1", "db2"]
    # the same rule for a replica the primary would admit later (ackset.py)
    assert election.beyond("0-6-8321", "0-2-8320") == "0-6-8321"
    assert election.beyond("0-2-8319", "0-2-8320,1-2-4") == ""
    assert election.beyond("garbage", "0-2-8320") == ""


# --- I10: a switchover's target takes the lock on the handover alone ---------------------------

def test_I10_only_the_named_target_in_the_handovers_own_term_may_take_over() -> None:
    sync = SyncState(primary="db1", primary_data="d1", members=(("db2", "d2"),), synced=True,
                     index=42)
    h = Handover("db1", "0-1-130", "db2", term=42, index=50)
    assert election.may_take_over(h, "db2", sync)
    assert not election.may_take_over(h, "db3", sync)  # not the target
    assert not election.may_take_over(h, "db1", sync)  # the old primary itself
    assert not election.may_take_over(None, "db2", sync)
    # a term began since (a primary wrote M): the handover is of an earlier term
    assert not election.may_take_over(h, "db2", SyncState("db2", "d2", index=57))
    # an older version's record (no term), a mysqld-exit handover (no position), no target
    assert not election.may_take_over(Handover("db1", "0-1-130", "db2"), "db2", sync)
    assert not election.may_take_over(Handover("db1", "", "db2", term=42), "db2", sync)
    assert not election.may_take_over(Handover("db1", "0-1-130", "", term=42), "db2", sync)
    # a cluster whose first primary never wrote M: term 0
    assert election.may_take_over(Handover("db1", "0-1-3", "db2", term=0), "db2", None)


def test_I10_the_first_set_after_a_take_over_keeps_the_members_and_takes_the_old_primary() -> None:
    sync = SyncState(primary="db1", primary_data="d1", members=(("db2", "d2"), ("db3", "d3")),
                     synced=True, index=42)
    h = Handover("db1", "0-1-130", "db2", term=42)
    # nobody published (the take-over needs no election): the old members and the old
    # primary, with the data ids M recorded, may acknowledge at once
    members, left_out = election.handover_followers("db2", "0-1-130", sync, h, [])
    assert members == {"db1": "d1", "db3": "d3"} and not left_out
    # a published position of this term wins over the recorded data id (a node that was
    # re-provisioned publishes its new one); one of another term counts for nothing
    published = [Published("db3", "0-1-130", "d3-new", term=42),
                 Published("db4", "0-1-130", "d4", term=41)]
    members, _ = election.handover_followers("db2", "0-1-130", sync, h, published)
    assert members == {"db1": "d1", "db3": "d3-new"}
    # never one whose position holds what the winner lacks, even if M names it
    published = [Published("db3", "0-1-130,1-9-4", "d3", term=42)]
    members, left_out = election.handover_followers("db2", "0-1-130", sync, h, published)
    assert members == {"db1": "d1"} and list(left_out) == ["db3"]


def test_I10_the_best_replica_is_a_member_least_behind() -> None:
    sync = SyncState(primary="db1", primary_data="d1", members=(("db3", "d3"), ("db4", "d4")),
                     synced=True)
    lag = {"db2": 0.0, "db3": 4.0, "db4": 1.0}
    assert election.handover_target(sync, ("db2", "db3", "db4"), lag) == "db4"
    assert election.handover_target(sync, ("db2", "db3", "db4"), {}) == "db3"  # by name
    assert election.handover_target(sync, ("db2",), lag) == "db2"  # no member is healthy
    assert election.handover_target(None, ("db3", "db2"), {}) == "db2"
    assert election.handover_target(sync, (), lag) == ""


def test_I3_a_primary_opening_again_over_its_own_set_keeps_the_members_still_attached() -> None:
    """CI, 2026-12-07: the primary's lease lapsed while the Consul leader was frozen; it kept
    the lock and opened again with no member, acknowledging alone, and its host died."""
    ours = SyncState("db3", "d3", (("db1", "d1"), ("db2", "d2")), synced=True, index=40)
    both = {"db1": "0-3-10", "db2": "0-3-9"}
    same = {"db1": "d1", "db2": "d2"}
    assert election.reopen_followers("db3", "d3", "0-3-10", ours, {"db1", "db2"}, both, same) == \
        ({"db1": "d1", "db2": "d2"}, {})
    assert election.reopen_followers("db3", "d3", "0-3-10", ours, {"db2"}, {}, same) == \
        ({"db2": "d2"}, {})  # a position not reported: taken in, as term_followers does
    # A member holding what we lack is left out, and says why (the keeper admits no such node).
    members, left_out = election.reopen_followers(
        "db3", "d3", "0-3-10", ours, {"db1", "db2"}, {"db1": "0-3-10,1-1-5", "db2": "0-3-10"},
        same)
    assert members == {"db2": "d2"} and "1-1-5" in left_out["db1"]
    # Another primary's set (one opened since), our name over other data (a restored copy),
    # or no set at all: nothing is kept, the election's followers alone.
    assert election.reopen_followers("db3", "d3", "0-3-10", replace(ours, primary="db1"),
                                     {"db1", "db2"}, both, same) == ({}, {})
    assert election.reopen_followers("db3", "d9", "0-3-10", ours, {"db1", "db2"}, both, same) == \
        ({}, {})
    assert election.reopen_followers("db3", "d3", "0-3-10", None, {"db1"}, both, same) == \
        ({}, {})
    # Nemesis seed 23971: db1 re-provisioned (new data id) and attached again is not kept
    # under its old data id; a data id not reported keeps none either.
    assert election.reopen_followers("db3", "d3", "0-3-10", ours, {"db1", "db2"}, both,
                                     {"db1": "d1-new", "db2": "d2"}) == ({"db2": "d2"}, {})
    assert election.reopen_followers("db3", "d3", "0-3-10", ours, {"db1", "db2"}, both,
                                     {"db2": "d2"}) == ({"db2": "d2"}, {})
