"""Cluster-wide admin commands that talk to Consul directly (run inside any node's container,
with its environment):

    autopilot-mysql failover --candidate NODE [--force] [--reason TEXT]
    autopilot-mysql config show | set NAME=VALUE ...
    autopilot-mysql galera bootstrap [--node NAME --force] [--reason TEXT]
    autopilot-mysql pause [--reason TEXT] | resume      maintenance mode

`failover` is for a cluster with no primary whose election is blocked: the nodes that may hold
acknowledged commits are missing (election.I5). It prints what the election is waiting for;
with --force it records the operator's decision in Consul (election.I7): NODE takes the lock
without those positions, and commits only they hold are lost. The lease rules still hold, so
it never makes two writable primaries.
"""

from __future__ import annotations

import getpass
import socket
import sys
import time
from datetime import UTC

from . import election, galera, gtid
from .config import CLUSTER_VARIABLES, Settings, cluster_settings
from .dcs import Consul
from .exceptions import ConfigError, DCSError
from .keys import ClusterKeys, paused_by


def _connect(s: Settings) -> tuple[Consul, ClusterKeys] | None:
    """Consul and one linearizable read of the cluster's keys; None (said why) if unreachable."""
    consul = Consul.for_settings(s)
    try:
        return consul, consul.cluster_state(consistent=True)
    except DCSError as exc:
        sys.stderr.write(f"autopilot-mysql: {exc}. Check CONSUL and that Consul is up.\n")
        return None


def failover(s: Settings, candidate: str, *, force: bool, reason: str, wait: float) -> int:
    got = _connect(s)
    if got is None:
        return 1
    consul, keys = got
    if keys.leader is not None:
        sys.stderr.write(f"autopilot-mysql: {keys.leader.node} is the primary: there is "
                         "nothing to fail over. To move the role, use `autopilot-mysql "
                         "switchover --to NODE`.\n")
        return 1
    term = election.term(keys.sync)
    earlier = sorted(n for n, p in keys.positions.items() if p.term != term)
    published = {n: p for n, p in keys.positions.items() if p.term == term}
    if earlier:
        print(f"positions published for an earlier election (not counted; those nodes publish "
              f"again if they take part): {', '.join(earlier)}")
    if candidate not in published:
        sys.stderr.write(f"autopilot-mysql: {candidate} has not published a position, so it "
                         "is not taking part in the election (down, unhealthy, or errant). "
                         f"Nodes taking part: {', '.join(sorted(published)) or 'none'}.\n")
        return 1
    print("positions published: " + ", ".join(
        f"{n} {p.gtid or '(empty)'}{'' if p.can_apply else ' (cannot apply it)'}"
        for n, p in sorted(published.items())))
    sync = keys.sync
    if sync is not None:
        print(f"acknowledgement set of {sync.primary}: {', '.join(sync.names) or 'none'}, "
              f"{'synced' if sync.synced else 'NOT synced (only it has every commit)'}, "
              f"high-water mark {sync.hwm or '(none)'}")
    out = election.decide_election(candidate, dict(published), sync)
    print(f"the election says: {out.verdict.value}: {out.reason}")
    if out.verdict == election.Verdict.TAKE and not keys.pause:
        print(f"{candidate} takes over by itself; nothing to force.")
        return 0
    if out.verdict == election.Verdict.TAKE:  # only maintenance mode holds it back
        print(f"maintenance mode holds {candidate} back ({paused_by(keys.pause)}); it holds "
              "every acknowledged commit, so naming it loses nothing")
        force = True
    mine = gtid.parse(published[candidate].gtid)
    missing = [n for n, _ in election.required(sync) if n not in published]
    behind = [n for n, p in published.items() if n != candidate
              and not gtid.covers(mine, gtid.parse(p.gtid))]
    if not force:
        loss = (f"Forcing {candidate} loses every commit that only "
                f"{', '.join(missing + behind) or 'the missing nodes'} hold"
                + (f" (the nodes ahead of it, {', '.join(behind)}, then need re-provisioning)"
                   if behind else ""))
        if not sys.stdin.isatty():
            sys.stderr.write(f"autopilot-mysql: not forced. {loss}. If that is acceptable, "
                             "run again with --force.\n")
            return 2
        if not _confirm(f"{loss}. Accept that loss?", False):
            return 2
    who = _operator()
    consul.force_failover(candidate, who, reason or "no reason given")
    print(f"recorded in Consul: {who} forced {candidate} to take over; it does so at its next "
          "cycle")
    t0 = time.monotonic()
    while time.monotonic() - t0 < wait:
        try:
            leader = consul.cluster_state().leader
        except DCSError:
            leader = None
        if leader is not None:
            print(f"{leader.node} is the primary ({time.monotonic() - t0:.1f}s)")
            return 0 if leader.node == candidate else 1
        time.sleep(0.2)
    sys.stderr.write(f"autopilot-mysql: no primary after {wait:.0f}s; see {candidate}'s log "
                     "and `autopilot-mysql status` on it\n")
    return 1


def config(s: Settings, command: str, assignments: list[str], fmt: str = "table") -> int:
    """`config show`: the cluster-wide settings in Consul (and where this environment differs);
    `config set NAME=VALUE ...`: validated together by the environment's rules (LOOP_WAIT at
    most SESSION_TTL / 4 ...), written with check-and-set; every node adopts them within a
    cycle, and leases are carried in each heartbeat, so a change is safe while running."""
    got = _connect(s)
    if got is None:
        return 1
    consul, keys = got
    current = keys.config or s.cluster.doc()
    if command == "show" and fmt != "table":
        from .clusterview import dump
        print(dump({"in_consul": bool(keys.config), "settings": dict(current),
                    "this_environment": s.cluster.doc()}, fmt))
        return 0
    if command == "show":
        where = consul.keys.config if keys.config else "not in Consul yet: this environment's"
        print(f"cluster-wide settings ({where}):")
        for k in CLUSTER_VARIABLES:
            mine = s.cluster.doc()[k]
            note = "" if mine == current.get(k) else f"   (this environment says {mine})"
            print(f"  {k}={current.get(k, '?')}{note}")
        return 0
    wanted = dict(current)
    for a in assignments:
        name, sep, value = a.partition("=")
        if not sep:
            sys.stderr.write(f"autopilot-mysql: {a!r} is not NAME=VALUE. Example: "
                             "autopilot-mysql config set SEMI_SYNC_TIMEOUT=0\n")
            return 2
        wanted[name.strip().upper()] = value.strip()
    try:
        new = cluster_settings(wanted)
    except ConfigError as exc:
        sys.stderr.write(f"autopilot-mysql: {exc}\n")
        return 2
    if not consul.write_config(new.doc(), keys.config_index if keys.config else 0):
        sys.stderr.write("autopilot-mysql: the settings changed meanwhile; run it again\n")
        return 1
    print("cluster-wide settings now: " + " ".join(f"{k}={v}" for k, v in new.doc().items()))
    return 0


def galera_bootstrap(s: Settings, node: str | None, *, force: bool, reason: str) -> int:
    """TOPOLOGY=galera with no Primary Component: print the census and what galera.py
    decides from it; with --node NAME --force, record that NAME bootstraps whatever the census
    says (what only the other members hold is lost; they rejoin by state transfer)."""
    got = _connect(s)
    if got is None:
        return 1
    consul, keys = got
    rec = keys.galera
    if rec is None:
        held = sorted({c.uuid for c in keys.census.values() if c.data == galera.DATA and c.uuid})
        print("cluster record: none (no bootstrap yet)" if not held else
              f"cluster record: none, but members hold data of {', '.join(held)}: Consul lost "
              "its data (or the key was deleted). No node bootstraps by itself (G12): a "
              "running member records the cluster again; with every member down, force the "
              "most advanced one below")
    else:
        print(f"cluster record: {rec.uuid or '(not recorded yet)'}, last bootstrapped by "
              f"{rec.by} from seqno {rec.seqno}, epoch {rec.epoch}"
              f"{' (forced)' if rec.forced else ''}")
    known = tuple(sorted(keys.members))
    for n in known:
        c = keys.census.get(n)
        print(f"  {n}: " + ("no census document" if c is None else
                            f"{c.state} at {c.position}, {c.data}"))
    choice = galera.choose_bootstrap(rec, known, keys.census)
    print(f"the census says: {choice.node or 'nobody'} bootstraps: {choice.reason}")
    if node is None:
        return 0
    if node not in known:
        sys.stderr.write(f"autopilot-mysql: {node} is not a member of {s.service_name} "
                         f"(members: {', '.join(known) or 'none'})\n")
        return 1
    if not force:
        sys.stderr.write(f"autopilot-mysql: not forced. Bootstrapping {node} keeps only what "
                         f"{node} holds; what the other members hold beyond it is lost when "
                         "they rejoin. If that is acceptable, run again with --force.\n")
        return 2
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    consul.force_bootstrap(node, who, reason or "no reason given")
    print(f"recorded in Consul: {who} forced {node} to bootstrap; it does so at its next cycle "
          "while no Primary Component exists")
    return 0


def _operator() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def pause(s: Settings, on: bool, *, reason: str, wait: float) -> int:
    """Maintenance mode on (`pause`) or off (`resume`), held in Consul so that it survives
    any node's restart; then wait until every member's own status says so (each reads it
    within a cycle), naming the ones that did not."""
    from . import clusterview
    got = _connect(s)
    if got is None:
        return 1
    consul, keys = got
    if on and keys.pause:
        print(f"already {paused_by(keys.pause)}")
    elif not on and not keys.pause:
        print("not paused: automatic failover is on")
        return 0
    else:
        try:
            if on:
                consul.set_pause(_operator(), reason or "no reason given")
            else:
                consul.clear_pause(_operator())
        except DCSError as exc:
            sys.stderr.write(f"autopilot-mysql: {exc}. Nothing changed.\n")
            return 1
    t0 = time.monotonic()
    late: list[str] = []
    while time.monotonic() - t0 < wait:
        try:
            _, members = consul.members()
        except DCSError:
            members = ()
        late = []
        for m in members:
            doc = clusterview.fetch_status(f"http://{m.address}:{s.health_port}/status")
            if doc is None or bool(doc.get("paused")) != on:
                late.append(m.node)
        if not late:
            break
        time.sleep(0.3)
    if on:
        print("maintenance mode ON: no automatic failover, an exited mysqld is not restarted "
              "(switchover and failover still work). `autopilot-mysql resume` ends it.")
    else:
        print("maintenance mode OFF: automatic failover is on again")
    if late:
        sys.stderr.write(f"autopilot-mysql: {', '.join(sorted(late))} did not confirm within "
                         f"{wait:.0f}s (down, or Consul unreachable from it); each applies "
                         "the setting at its next cycle that reaches Consul\n")
        return 1
    return 0


def _confirm(question: str, force: bool) -> bool:
    """y/N on a terminal; without one, only --force says yes (never a silent yes)."""
    if force:
        return True
    if not sys.stdin.isatty():
        sys.stderr.write(f"autopilot-mysql: {question} Not confirmed: no terminal to ask on; "
                         "pass --force to confirm.\n")
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def parse_when(text: str, now: float) -> float:
    """--scheduled: an ISO 8601 time (UTC unless it names an offset), in the future."""
    from datetime import datetime
    try:
        t = datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a time; example: 2026-12-03T23:30Z "
                         "(UTC unless an offset is given)") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    at = t.timestamp()
    if at <= now:
        raise ValueError(f"{text} is in the past")
    return at


def switchover(s: Settings, leader: str | None, candidate: str | None, *,
               scheduled: str | None, force: bool, wait: float) -> int:
    """Hand the primary role (Galera: the writer role) over, through Consul: checked against
    the cluster as it is now, confirmed (y/N, or --force), carried out by the primary at
    once or at the scheduled time (election.I10: no election, a short pause)."""
    got = _connect(s)
    if got is None:
        return 1
    consul, keys = got
    role = "writer" if s.topology == "galera" else "primary"
    current = keys.leader
    if current is None:
        sys.stderr.write(f"autopilot-mysql: there is no {role} to switch over from. If the "
                         "election is blocked, `autopilot-mysql failover --candidate NODE` "
                         "says why and can force it.\n")
        return 1
    if leader and leader != current.node:
        sys.stderr.write(f"autopilot-mysql: {leader} is not the {role}: {current.node} is. "
                         "Nothing changed.\n")
        return 1
    try:
        _, members = consul.members()
    except DCSError as exc:
        sys.stderr.write(f"autopilot-mysql: {exc}\n")
        return 1
    from .api import switchover_refusal
    refused = switchover_refusal(
        leader=current.node, to=candidate or "", members={m.node for m in members},
        service=s.service_name, role=role, nofailover={m.node for m in members if m.nofailover})
    if refused is None and candidate and not any(m.node == candidate and m.passing
                                                 for m in members):
        refused = (409, f"{candidate}'s Consul check does not pass: it would be refused")
    if refused is not None:
        sys.stderr.write(f"autopilot-mysql: {refused[1]}. Nothing changed.\n")
        return 1
    at = None
    if scheduled:
        try:
            at = parse_when(scheduled, time.time())
        except ValueError as exc:
            sys.stderr.write(f"autopilot-mysql: --scheduled: {exc}\n")
            return 2
    when = f" at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(at))}" if at else " now"
    target = candidate or "the best replica"
    if keys.switchover and keys.switchover.get("session") == current.session:
        print(f"replacing the pending request {keys.switchover}")
    if not _confirm(f"Switch over from {current.node} to {target}{when}?", force):
        return 2
    try:
        consul.request_switchover(current.node, candidate, current.session, at=at,
                                  by=_operator())
    except DCSError as exc:
        sys.stderr.write(f"autopilot-mysql: {exc}. Nothing changed.\n")
        return 1
    if at is not None:
        print(f"switchover from {current.node} to {target} scheduled{when}; `autopilot-mysql "
              "list` shows it, `autopilot-mysql switchover --cancel` withdraws it")
        return 0
    print(f"switchover from {current.node} to {target} requested")
    t0 = time.monotonic()
    while time.monotonic() - t0 < wait:
        try:
            now = consul.cluster_state().leader
        except DCSError:
            now = None
        if now is not None and now.node != current.node and (not candidate
                                                            or now.node == candidate):
            print(f"switchover done: {current.node} -> {now.node} in "
                  f"{time.monotonic() - t0:.1f}s")
            return 0
        time.sleep(0.1)
    sys.stderr.write(f"autopilot-mysql: no new {role} after {wait:.0f}s; see "
                     f"`autopilot-mysql list` and {current.node}'s log (a refused switchover "
                     "is logged there with why)\n")
    return 1


def cancel_switchover(s: Settings) -> int:
    got = _connect(s)
    if got is None:
        return 1
    consul, keys = got
    if not keys.switchover:
        print("no switchover is pending")
        return 0
    try:
        consul.clear_switchover()
    except DCSError as exc:
        sys.stderr.write(f"autopilot-mysql: {exc}\n")
        return 1
    print(f"withdrew the switchover request {keys.switchover}")
    return 0


def reinit(s: Settings, node: str, *, force: bool, reason: str, wait: float) -> int:
    """Re-provision a replica (the latest snapshot, else a copy of a live replica): asked
    through Consul, carried out by the node itself, which deletes the request once its new
    data is in place; then wait until it replicates again on new data."""
    from . import clusterview
    got = _connect(s)
    if got is None:
        return 1
    consul, keys = got
    try:
        _, members = consul.members()
    except DCSError as exc:
        sys.stderr.write(f"autopilot-mysql: {exc}\n")
        return 1
    member = next((m for m in members if m.node == node), None)
    if member is None:
        sys.stderr.write(f"autopilot-mysql: {node} is not a member of {s.service_name} "
                         f"(members: {', '.join(sorted(m.node for m in members)) or 'none'})\n")
        return 1
    role = "writer" if s.topology == "galera" else "primary"
    if keys.leader is not None and keys.leader.node == node:
        sys.stderr.write(f"autopilot-mysql: {node} is the {role}: its data is the "
                         "cluster's. Switch over first (autopilot-mysql switchover), then "
                         "reinit it.\n")
        return 1
    if keys.leader is None:
        sys.stderr.write("autopilot-mysql: there is no primary to re-provision from; see "
                         "`autopilot-mysql list`.\n")
        return 1
    url = f"http://{member.address}:{s.health_port}/status"
    source = ("a full state transfer from a Synced member" if s.topology == "galera" else
              "the latest snapshot (or a copy of a live replica)")
    if not _confirm(f"Re-provision {node}? Its data is replaced by {source}; whatever only "
                    "it holds is discarded.", force):
        return 2
    try:
        consul.request_reinit(node, _operator(), reason or "no reason given")
    except DCSError as exc:
        sys.stderr.write(f"autopilot-mysql: {exc}. Nothing changed.\n")
        return 1
    print(f"reinit of {node} requested; it rebuilds itself at its next cycle")
    t0 = time.monotonic()
    while time.monotonic() - t0 < wait:
        doc = clusterview.fetch_status(url) or {}
        try:
            pending = node in consul.cluster_state().reinit
        except DCSError:
            pending = True
        # The node deletes the request once its new data is in place
        if not pending and doc.get("role") == "replica" and doc.get("healthy"):
            print(f"{node} re-provisioned and replicating again in "
                  f"{time.monotonic() - t0:.0f}s")
            return 0
        time.sleep(1)
    sys.stderr.write(f"autopilot-mysql: {node} has not finished after {wait:.0f}s; its "
                     "status (`autopilot-mysql list`) and log say where it is\n")
    return 1
