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

from . import election, galera, gtid
from .config import CLUSTER_VARIABLES, Settings, cluster_settings
from .dcs import Consul
from .exceptions import ConfigError, DCSError
from .keys import ClusterKeys, paused_by


def _connect(s: Settings) -> tuple[Consul, ClusterKeys] | None:
    """Consul and one linearizable read of the cluster's keys; None (said why) if unreachable."""
    host, port = s.consul_endpoint
    consul = Consul(host, port, s.service_name)
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
        sys.stderr.write(
            f"autopilot-mysql: not forced. Forcing {candidate} loses every commit that only "
            f"{', '.join(missing + behind) or 'the missing nodes'} hold"
            + (f" (the nodes ahead of it, {', '.join(behind)}, then need re-provisioning)"
               if behind else "")
            + ". If that is acceptable, run again with --force.\n")
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


def config(s: Settings, command: str, assignments: list[str]) -> int:
    """`config show`: the cluster-wide settings in Consul (and where this environment differs);
    `config set NAME=VALUE ...`: validated together by the environment's rules (LOOP_WAIT at
    most SESSION_TTL / 4 ...), written with check-and-set; every node adopts them within a
    cycle, and leases are carried in each heartbeat, so a change is safe while running."""
    got = _connect(s)
    if got is None:
        return 1
    consul, keys = got
    current = keys.config or s.cluster.doc()
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
        print("cluster record: none (no bootstrap yet)")
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
