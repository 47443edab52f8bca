"""galera.py's rules (G1-G10) and the wsrep parsers, on pure values."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from autopilot_mysql import galera
from autopilot_mysql.election import Handover
from autopilot_mysql.galera import (
    DATA,
    DOWN,
    NO_DATA,
    STARTING,
    UP,
    CensusDoc,
    GaleraObservation,
    Record,
    choose_bootstrap,
    decide,
)
from autopilot_mysql.model import Action, ProcState, Role
from autopilot_mysql.mysql import wsrep

U = "2170f6ba-eddc-11f1-97b9-97d5506f8f3f"
OTHER = "9999f6ba-eddc-11f1-97b9-97d5506f8f3f"
REC = Record(U, 100, 3, "db1", index=7)
KNOWN = ("db1", "db2", "db3")


def down(node: str, seqno: int, uuid: str = U, data: str = DATA) -> CensusDoc:
    return CensusDoc(node, DOWN, uuid, seqno, data, index=10 + seqno)


CENSUS = {"db1": down("db1", 120), "db2": down("db2", 150), "db3": down("db3", 130)}

# db2, mysqld down, position known and published, Consul answers, no Primary Component.
BASE = GaleraObservation(node="db2", mysqld=ProcState.STOPPED, local=CENSUS["db2"],
                         published=CENSUS["db2"], dcs_ok=True, record=REC, known=KNOWN,
                         census=CENSUS)


def act(**kw: object) -> Action:
    return decide(replace(BASE, **kw)).action  # type: ignore[arg-type]


# --- G2-G4: the census and the choice -------------------------------------------------------

def test_g3_the_highest_seqno_on_the_recorded_uuid_wins() -> None:
    c = choose_bootstrap(REC, KNOWN, CENSUS)
    assert (c.node, c.seqno, c.uuid) == ("db2", 150, U)


def test_g3_ties_go_to_the_smallest_name() -> None:
    census = {**CENSUS, "db3": down("db3", 150)}
    assert choose_bootstrap(REC, KNOWN, census).node == "db2"


def test_g2_a_missing_member_blocks_the_bootstrap_whatever_the_others_hold() -> None:
    census = {k: v for k, v in CENSUS.items() if k != "db3"}
    c = choose_bootstrap(REC, KNOWN, census)
    assert c.node is None and "db3" in c.reason and "--force" in c.reason


def test_g2_a_member_that_is_starting_blocks_it_too() -> None:
    census = {**CENSUS, "db1": replace(CENSUS["db1"], state=STARTING)}
    c = choose_bootstrap(REC, KNOWN, census)
    assert c.node is None and "db1 is starting" in c.reason


def test_g3_never_empty_aborted_or_foreign_data_and_never_safe_to_bootstrap_alone() -> None:
    census = {"db1": down("db1", -1, data=NO_DATA), "db2": down("db2", 900, uuid=OTHER),
              "db3": down("db3", 110)}
    assert choose_bootstrap(REC, KNOWN, census).node == "db3"
    census["db3"] = down("db3", -1, data=NO_DATA)
    c = choose_bootstrap(REC, KNOWN, census)
    assert c.node is None and "no member holds data" in c.reason


def test_g4_a_recovery_never_goes_back_behind_the_last_bootstrap() -> None:
    rec = replace(REC, seqno=200)  # the node with newer data was wiped, say
    c = choose_bootstrap(rec, KNOWN, CENSUS)
    assert c.node is None and "Refusing to go back" in c.reason and "--force" in c.reason


def test_g3_without_a_record_differing_histories_are_not_compared() -> None:
    census = {**CENSUS, "db1": down("db1", 999, uuid=OTHER)}
    assert choose_bootstrap(None, KNOWN, census).node is None


# --- the down path: recover, publish, join or bootstrap ------------------------------------

def test_mysqld_down_first_reads_its_position() -> None:
    assert act(local=None) == Action.RECOVER


def test_position_is_published_before_anything_else() -> None:
    assert act(published=replace(CENSUS["db2"], seqno=3)) == Action.PUBLISH_POSITION
    assert act(published=None) == Action.PUBLISH_POSITION


def test_a_node_never_starts_without_consul() -> None:
    assert act(dcs_ok=False) == Action.WAIT


def test_a_primary_component_is_joined() -> None:
    assert act(component_exists=True) == Action.JOIN


def test_only_the_chosen_node_bootstraps_the_others_wait() -> None:
    assert act() == Action.BOOTSTRAP
    d = decide(replace(BASE, node="db1", local=CENSUS["db1"], published=CENSUS["db1"]))
    assert d.action == Action.WAIT and "db2 bootstraps" in d.reason


def test_g1_the_first_boot_claims_the_record_the_others_wait_for_it() -> None:
    empty = CensusDoc("db2", DOWN)
    assert act(record=None, local=empty, published=empty, census={"db2": empty},
               known=()) == Action.BOOTSTRAP
    new = Record("", -1, 1, "db1")
    census = {"db1": CensusDoc("db1", STARTING), "db2": empty}
    assert act(record=new, local=empty, published=empty, census=census) == Action.WAIT


def test_g1_a_first_boot_never_creates_an_empty_cluster_beside_existing_data() -> None:
    empty = CensusDoc("db2", DOWN)
    census = {"db1": down("db1", 50), "db2": empty}
    assert act(record=None, local=empty, published=empty, census=census,
               known=("db1", "db2")) == Action.WAIT


def test_an_unfinished_first_bootstrap_is_finished_by_its_claimant() -> None:
    mine = Record("", -1, 1, "db2")
    assert act(record=mine) == Action.BOOTSTRAP


def test_an_operator_forces_a_bootstrap_from_a_named_node() -> None:
    census = {k: v for k, v in CENSUS.items() if k != "db3"}  # db3 gone for good
    assert act(census=census) == Action.WAIT
    assert act(census=census, forced="db2") == Action.BOOTSTRAP
    assert act(census=census, forced="db1") == Action.WAIT


# --- G12: Consul lost the record while members hold the cluster's data ----------------------

def test_g12_data_of_a_cluster_and_no_record_never_bootstraps_a_second_cluster() -> None:
    """Consul rebuilt from empty: this node, down, holds the cluster's data, and its own member
    record (written again at registration) is all Consul knows. Before G12 the census of one
    chose it and it bootstrapped beside the members still running the cluster."""
    d = decide(replace(BASE, record=None, known=("db2",), census={"db2": CENSUS["db2"]}))
    assert d.action == Action.WAIT
    assert "no record" in d.reason and "--force" in d.reason and U in d.reason
    # whatever the census: with every member down and published, still an operator's choice
    assert act(record=None) == Action.WAIT
    # a new node with no data beside a member that holds some waits as well
    empty = CensusDoc("db2", DOWN)
    assert act(record=None, local=empty, published=empty, known=("db1", "db2"),
               census={"db1": down("db1", 50), "db2": empty}) == Action.WAIT


def test_g12_an_operator_may_still_force_a_bootstrap_and_a_member_comes_back_by_joining() -> None:
    assert act(record=None, forced="db2") == Action.BOOTSTRAP
    assert act(record=None, component_exists=True) == Action.JOIN


def test_g12_a_synced_member_records_the_cluster_again() -> None:
    d = decide(replace(RUN, record=None))
    assert d.action == Action.PUBLISH_POSITION and "G12" in d.reason
    assert decide(replace(RUN, record=None, synced=False, state_comment="Donor/Desynced")
                  ).action != Action.PUBLISH_POSITION
    assert decide(replace(RUN, record=None, dcs_ok=False)).action != Action.PUBLISH_POSITION


# --- G6: the writer --------------------------------------------------------------------------

RUN = replace(BASE, mysqld=ProcState.RUNNING, mysql_alive=True, read_only=True, primary=True,
              synced=True, state_comment="Synced", local=None,
              published=CensusDoc("db2", UP, U, 160, DATA), registered=True, session="s2",
              leader="db1", writer_in_component=True)


def run(**kw: object) -> Action:
    return decide(replace(RUN, **kw)).action  # type: ignore[arg-type]


def test_a_synced_reader_serves_reads() -> None:
    d = decide(RUN)
    assert (d.action, d.role, d.healthy) == (Action.STAY_REPLICA, Role.REPLICA, True)


def test_a_free_lock_is_taken_by_a_synced_node_only() -> None:
    assert run(leader=None) == Action.ACQUIRE_LOCK
    assert run(leader=None, synced=False, state_comment="Donor/Desynced") == Action.WAIT
    assert run(leader=None, primary=False, synced=False) == Action.WAIT


def test_g6_a_writer_outside_our_primary_component_is_deposed() -> None:
    assert run(writer_in_component=False) == Action.DEPOSE


def test_g6_the_writer_opens_only_after_the_previous_lease_and_fences_past_its_own() -> None:
    assert run(leader="db2", lease_left=1.0, open_in=0.8) == Action.WAIT
    assert run(leader="db2", lease_left=1.0) == Action.PROMOTE
    assert run(leader="db2", lease_left=1.0, read_only=False) == Action.STAY_PRIMARY
    assert run(leader="db2", lease_left=0.0, read_only=False) == Action.FENCE


def test_g6_writable_outside_a_primary_component_or_unsynced_is_fenced() -> None:
    assert run(primary=False, synced=False, read_only=False) == Action.FENCE
    assert run(synced=False, state_comment="Donor/Desynced", read_only=False) == Action.FENCE
    assert run(read_only=False) == Action.FENCE  # another node holds the lock
    assert run(primary=False, synced=False, leader="db2") == Action.RELEASE


# --- G8: switchover ----------------------------------------------------------------------------

WRITER = dict(leader="db2", lease_left=1.0, read_only=False, readers=("db1", "db3"))


def test_g8_the_writer_hands_over_to_a_synced_reader_or_says_why_not() -> None:
    assert run(**WRITER, switchover_to="db3") == Action.HAND_OVER
    assert run(**WRITER, switchover_to="") == Action.HAND_OVER
    d = decide(replace(RUN, **WRITER, switchover_to="db9"))  # type: ignore[arg-type]
    assert d.action == Action.REJECT_SWITCHOVER and "db9" in d.reason and "db1, db3" in d.reason
    assert run(**{**WRITER, "readers": ()}, switchover_to="") == Action.REJECT_SWITCHOVER


def test_g8_only_the_target_takes_the_lock_for_a_while_and_opens_at_the_handed_over_seqno(
        ) -> None:
    h = Handover("db1", "170", "db3")
    # db2 is not the target: it leaves the lock to db3, then takes part again.
    assert run(leader=None, handover=h, handover_wait=3.0) == Action.WAIT
    assert run(leader=None, handover=h, handover_wait=0.0) == Action.ACQUIRE_LOCK
    # the old writer does not take it back meanwhile
    mine = Handover("db2", "170", "db3")
    assert run(leader=None, handover=mine, handover_wait=3.0) == Action.WAIT
    # the target (any node when none was named) takes it, and opens once it committed 170
    to_me = Handover("db1", "170", "db2")
    assert run(leader=None, handover=to_me, handover_wait=3.0) == Action.ACQUIRE_LOCK
    assert run(leader=None, handover=Handover("db1", "170", ""), handover_wait=3.0) == \
        Action.ACQUIRE_LOCK
    holding = dict(leader="db2", lease_left=1.0, handover=to_me)
    d = decide(replace(RUN, **holding, last_committed=168))  # type: ignore[arg-type]
    assert d.action == Action.WAIT and "170" in d.reason
    assert run(**holding, last_committed=170) == Action.PROMOTE  # no lease wait (open_in 0)


def test_g9_a_node_that_confirmed_the_writers_failsafe_lease_neither_takes_nor_deposes() -> None:
    assert run(leader=None, promised_for=1.5) == Action.WAIT
    assert run(writer_in_component=False, promised_for=1.5) == Action.WAIT
    assert run(leader=None, promised_for=0.0) == Action.ACQUIRE_LOCK
    # the writer keeps writing while its (failsafe) lease runs, Consul or not
    assert run(**WRITER, dcs_ok=False) == Action.STAY_PRIMARY
    assert run(**{**WRITER, "lease_left": 0.0}, dcs_ok=False) == Action.FENCE


def test_g10_a_full_volume_hands_the_writer_role_over_or_takes_a_reader_out() -> None:
    full = "the data volume has 40.0 MiB free (DISK_MIN_FREE 64.0 MiB)"
    d = decide(replace(RUN, **WRITER, disk_full=full, roomy_readers=("db3",)))  # type: ignore[arg-type]
    assert d.action == Action.HAND_OVER and "db3" in d.reason
    d = decide(replace(RUN, **WRITER, disk_full=full))  # type: ignore[arg-type]
    assert d.action == Action.STAY_PRIMARY and "no Synced reader has room" in d.reason
    assert run(disk_full=full) == Action.LEAVE  # a reader: out, before it stalls the cluster
    assert run(disk_full=full, leader=None) == Action.LEAVE  # and it never takes the lock
    # down, with a Primary Component to join: it waits for room
    assert act(disk_full=full, component_exists=True) == Action.WAIT
    assert act(component_exists=True) == Action.JOIN


def test_a_non_primary_node_keeps_running_and_serves_nothing() -> None:
    d = decide(replace(RUN, primary=False, synced=False))
    assert d.action == Action.WAIT and not d.healthy and "rejoins" in d.reason


def test_a_starting_node_is_never_killed() -> None:
    d = decide(replace(RUN, mysql_alive=False, read_only=None))
    assert d.action == Action.WAIT and "nothing kills it" in d.reason


# --- wsrep parsers ------------------------------------------------------------------------------

def test_grastate_and_recovered_position_are_parsed() -> None:
    g = wsrep.parse_grastate(f"# GALERA saved state\nversion: 2.1\nuuid:    {U}\n"
                             "seqno:   -1\nsafe_to_bootstrap: 1\n")
    assert g is not None and g.safe_to_bootstrap and g.position == wsrep.Position(U, -1)
    assert not g.position.valid
    assert wsrep.parse_grastate("garbage") is None
    text = (f"[Note] WSREP: Recovered position: {wsrep.NULL_UUID}:-1\n"
            f"[Note] WSREP: Recovered position: {U}:28,0-1-27\n")
    assert wsrep.parse_recovered(text) == wsrep.Position(U, 28)
    assert wsrep.parse_recovered("nothing") is None


def test_status_names_the_components_members() -> None:
    st = wsrep.parse_status({"wsrep_cluster_status": "Primary", "wsrep_local_state": "4",
                             "wsrep_ready": "ON", "wsrep_cluster_state_uuid": U,
                             "wsrep_last_committed": "41", "wsrep_cluster_size": "3",
                             "wsrep_incoming_addresses": "10.0.0.1:3306,10.0.0.2:3306"})
    assert st.synced and st.has_member("10.0.0.2") and not st.has_member("10.0.0.3")
    assert not wsrep.parse_status({"wsrep_cluster_status": "Non-primary"}).synced


def test_g7_without_quorum_anywhere_a_node_leaves_for_the_census() -> None:
    lost = replace(RUN, primary=False, synced=False, leader=None)
    assert decide(replace(lost, non_primary_for=3.0)).action == Action.WAIT
    assert decide(replace(lost, non_primary_for=30.0)).action == Action.LEAVE
    # a Primary Component serves elsewhere (we are the minority), or Consul cannot say
    assert decide(replace(lost, non_primary_for=30.0, component_exists=True)).action \
        == Action.WAIT
    assert decide(replace(lost, non_primary_for=30.0, component_listed=True)).action \
        == Action.WAIT
    assert decide(replace(lost, non_primary_for=30.0, dcs_ok=False)).action == Action.WAIT


def test_g7_a_joiner_whose_donor_died_leaves_for_the_census_too() -> None:
    """CI's nemesis seed 231689: the joiner lost the Primary Component during its state
    transfer; mysqld never answers, and the census waited on "db3 is starting" for ever."""
    stuck = replace(RUN, mysql_alive=False, read_only=None, primary=False, synced=False,
                    leader=None)
    waiting = decide(replace(stuck, non_primary_for=3.0))
    assert waiting.action == Action.WAIT and "no Primary Component is in sight" in waiting.reason
    assert decide(replace(stuck, non_primary_for=30.0)).action == Action.LEAVE
    for elsewhere in (dict(component_exists=True), dict(component_listed=True),
                      dict(dcs_ok=False)):  # a donor may still come, or Consul cannot say
        assert decide(replace(stuck, non_primary_for=30.0, **elsewhere)).action \
            == Action.WAIT  # type: ignore[arg-type]
    # with no word of a non-Primary view it is a normal start: never killed
    assert "nothing kills it" in decide(replace(stuck, non_primary_for=0.0)).reason


def test_the_group_view_is_read_from_mysqlds_log() -> None:
    assert wsrep.component_of("2026-12-02 17:00:01 0 [Note] WSREP: New COMPONENT: primary = "
                              "no, bootstrap = no, my_idx = 0, memb_num = 1") is False
    assert wsrep.component_of("[Note] WSREP: New COMPONENT: primary = yes, bootstrap = no, "
                              "my_idx = 1, memb_num = 2") is True
    assert wsrep.component_of("[Note] WSREP: Shifting JOINER -> OPEN (TO: 12)") is None
    assert wsrep.view_processed("  status: primary") and wsrep.view_processed("  status: "
                                                                              "non-primary")
    assert not wsrep.view_processed("status: primary in a sentence")


def test_g9_the_failsafe_asks_the_component_too_not_only_the_catalog_last_seen() -> None:
    """A writer cut off from Consul right after a full restart saw no other member passing;
    the members of its component must confirm all the same, and one it cannot name never
    confirms."""
    addresses = {"db2": "10.0.0.2", "db3": "10.0.0.3"}
    component = ("10.0.0.1:3306", "10.0.0.2:3306", "10.0.0.3:3306")
    assert galera.failsafe_members(set(), component, addresses, "10.0.0.1") == {"db2", "db3"}
    assert galera.failsafe_members({"db3"}, ("10.0.0.1:3306",), addresses, "10.0.0.1") == {"db3"}
    assert galera.failsafe_members(set(), ("10.0.0.1:3306", "10.0.0.9:3306"), addresses,
                                   "10.0.0.1") == {"the member at 10.0.0.9"}


def test_g11_whom_a_refused_galera_port_evicts() -> None:
    """Only the one peer mysqld lost, the one member of our view on that host, never
    ourselves, only from a Primary Component that keeps a majority of its view without it
    (Galera counts an evicted member as one that left cleanly)."""
    view = (("u1", "10.0.0.1:3306", "db1"), ("u2", "10.0.0.2:3306", "db2"),
            ("u3", "10.0.0.3:3306", "db3"))
    assert galera.evictee("10.0.0.2", 1, view, "u1", primary=True) == ("u2", "db2")
    assert galera.evictee("10.0.0.2", 1, view, "u1", primary=False) is None
    assert galera.evictee("10.0.0.2", 2, view, "u1", primary=True) is None  # a partition?
    assert galera.evictee("10.0.0.2", 1, view[:2], "u1", primary=True) is None  # 1 of 2 left
    assert galera.evictee("10.0.0.1", 1, view, "u1", primary=True) is None  # ourselves
    # one of three already on its way out: a second eviction would leave a minority
    assert galera.evictee("10.0.0.3", 1, view, "u1", primary=True,
                          evicted=frozenset({"u2"})) is None
    assert galera.evictee("10.0.0.2", 1, view, "u1", primary=True,
                          evicted=frozenset({"u2"})) is None  # already being evicted
    five = view + (("u4", "10.0.0.4:3306", "db4"), ("u5", "10.0.0.5:3306", "db5"))
    assert galera.evictee("10.0.0.3", 1, five, "u1", primary=True,
                          evicted=frozenset({"u2"})) == ("u3", "db3")  # 3 of 5 stay
    assert galera.evictee("10.0.0.9", 1, view, "u1", primary=True) is None  # already left
    assert galera.evictee("10.0.0.2", 1, view + (("u4", "10.0.0.2:3307", "db4"),), "u1",
                          primary=True) is None  # two members on that host: ambiguous
    assert galera.evictee("10.0.0.1", 1, view + (("u5", "10.0.0.10:3306", "db10"),), "u2",
                          primary=True) == ("u1", "db1")  # a host, not a prefix of one


def test_g11_lost_peers_are_read_from_mysqlds_log() -> None:
    line = ("2026-12-03 11:55:42 0 [Note] WSREP: (6575ddf6-9e4c, 'tcp://0.0.0.0:4567') turning "
            "message relay requesting on, nonlive peers: tcp://10.213.0.12:4567 "
            "tcp://10.213.0.13:4567 ")
    assert wsrep.nonlive_peers(line) == (("10.213.0.12", 4567), ("10.213.0.13", 4567))
    assert wsrep.nonlive_peers("[Note] WSREP: (a, 'tcp://0.0.0.0:4567') turning message relay "
                               "requesting off") == ()
    assert wsrep.nonlive_peers("[Note] WSREP: forgetting 66911f74-b17a "
                               "(tcp://10.213.0.12:4567)") == ()
    assert wsrep.evicted("2026-12-03 11:58:50 0 [ERROR] WSREP: exception from gcomm, backend "
                         "must be restarted: this node has been evicted out of the cluster, "
                         "gcomm backend restart is required (FATAL)")
    assert not wsrep.evicted("[Note] WSREP: Evicting node d5be33b3-925c permanently from "
                             "cluster")
    assert wsrep.evicting("[Note] WSREP: Evicting node d5be33b3-925c permanently from cluster")
    assert not wsrep.evicting("[Note] WSREP: unevicting d5be33b3-925c")


def test_g11_a_node_told_it_was_evicted_stops_mysqld_to_join_again() -> None:
    """Its group layer will not reconnect by itself: waiting for Galera would be for ever,
    while other members serve (G7 would never stop it)."""
    evicted = replace(RUN, primary=False, synced=False, leader="db3", read_only=True,
                      component_exists=True, component_listed=True, evicted=True)
    d = decide(evicted)
    assert d.action == Action.LEAVE and "evicted" in d.reason
    assert decide(replace(evicted, evicted=False)).action == Action.WAIT
    # a writable one is fenced first
    assert decide(replace(evicted, read_only=False)).action == Action.FENCE


def test_a_killed_state_transfers_pid_file_is_removed_before_mysqld_starts(tmp_path: Path) -> None:
    """MariaDB's SST script takes any live process with that pid for a transfer in progress;
    after a restart the small pids of a container come back."""
    (tmp_path / wsrep.SST_PID).write_text("29\n")
    assert wsrep.forget_sst_pid(tmp_path) is True
    assert not (tmp_path / wsrep.SST_PID).exists()
    assert wsrep.forget_sst_pid(tmp_path) is False


def test_maintenance_mode_holds_back_the_writer_change_restarts_and_bootstraps() -> None:
    paused = "paused by ops@h at t: upgrade"
    held = decide(replace(RUN, leader=None, paused=paused, last_writer="db1"))
    assert held.action == Action.WAIT and "db1" in held.reason and "resume" in held.reason
    assert run(leader=None, paused=paused, last_writer="db2") == Action.ACQUIRE_LOCK
    assert run(leader=None, paused=paused, last_writer=None) == Action.ACQUIRE_LOCK
    to_me = Handover("db1", "150", "db2")
    assert run(leader=None, paused=paused, last_writer="db1", handover=to_me) == \
        Action.ACQUIRE_LOCK
    # No bootstrap chosen by the census while paused; an operator's forced one still runs.
    assert act() == Action.BOOTSTRAP  # the control: db2 holds the highest seqno
    w = decide(replace(BASE, paused=paused))
    assert w.action == Action.WAIT and "no automatic bootstrap" in w.reason
    assert act(paused=paused, forced="db2") == Action.BOOTSTRAP
    # An exited mysqld is not started again while paused.
    exited = decide(replace(BASE, paused=paused, mysqld=ProcState.BACKOFF))
    assert exited.action == Action.WAIT and "not started again" in exited.reason
    # Fencing is never paused.
    assert run(paused=paused, primary=False, synced=False, read_only=False) == Action.FENCE


def test_a_nofailover_reader_never_takes_the_writer_lock() -> None:
    w = decide(replace(RUN, leader=None, nofailover=True))
    assert (w.action, w.role, w.healthy) == (Action.WAIT, Role.REPLICA, True)
    assert "NOFAILOVER" in w.reason
    assert run(leader="db1", nofailover=True) == Action.STAY_REPLICA
