"""A randomized nemesis (Jepsen's model) against both topologies (replication and Galera).

Clients write through HAProxy's write port while faults are drawn at random from a seeded
generator and injected at random moments, overlapping, without waiting for the cluster to
settle in between: host kill, pause (short, and longer than the session TTL), partition (both
ways, one way in each direction, from the Consul server only), mysqld crash, loss of the Consul
server, a full data volume (below DISK_MIN_FREE; replication only: the Galera supervisor has
no disk rule yet), two nodes killed at once, and every node killed at
once (a power cut). Each fault is
healed after a random time. After the last one heals, the checkers:

- one primary within RECOVERY_BOUND seconds, with no manual step;
- every acknowledged row on the primary and on every replica;
- no errant transaction left on any node, every node at the same GTID position;
- no sample with two writable nodes, except for a node that was resumed from SIGSTOP within
  RESUME_EXCUSE seconds (it cannot fence while frozen; the supervisor fences it on SIGCONT, and
  the row check proves it acknowledged nothing meanwhile). Such samples are counted and shown.

The seed is printed; CHAOS_SEED=N replays the same draws (the timing of a real system still
varies). CHAOS_FAULTS sets how many faults (CI: 12; `make chaos`: 120); CHAOS_TOPOLOGY
picks replication or galera (default: both, one after the other). For Galera "errant" is
always empty and the position is the cluster's uuid:seqno, the same on every node.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.test_replication import ReadOnlyWatch, roles
from tests.testbed.bed import TestBed
from tests.testbed.cluster import Node, boot_cluster, start_router
from tests.testbed.components import HAProxy, start_consul
from tests.testbed.util import wait_until
from tests.testbed.workload import Writer, create_table, longest_gap, missing_on

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FAULTS = int(os.environ.get("CHAOS_FAULTS", "12"))
SEED = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 10**6))
TOPOLOGIES = os.environ.get("CHAOS_TOPOLOGY", "replication,galera").split(",")
RECOVERY_BOUND = 180.0
RESUME_EXCUSE = 0.1
T0 = time.monotonic()


def stamp_now() -> float:
    return time.monotonic() - T0


def stamp() -> str:
    return f"t={time.monotonic() - T0:7.2f}"


@dataclass
class Fault:
    kind: str
    targets: list[str]
    heal: Callable[[], None]
    heal_at: float
    note: str = ""


@dataclass
class Nemesis:
    bed: TestBed
    nodes: list[Node]
    rng: random.Random
    active: list[Fault] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    resumed: list[tuple[str, float, float]] = field(default_factory=list)
    consul_down: bool = False

    KINDS = ("kill", "pause-short", "pause-long", "partition", "partition-in", "partition-out",
             "cut-from-consul", "mysqld-crash", "consul-loss", "kill-two", "kill-all",
             "disk-full")
    WEIGHTS = (14, 8, 6, 10, 6, 6, 8, 10, 6, 4, 3, 5)

    def log(self, text: str) -> None:
        line = f"{stamp()} {text}"
        self.timeline.append(line)
        print(line, flush=True)

    def busy(self) -> set[str]:
        return {t for f in self.active for t in f.targets}

    def pick(self, free: list[Node], count: int = 1) -> list[Node]:
        primaries = [n for n in free if n.http("/primary") == 200]
        first = primaries[0] if primaries and self.rng.random() < 0.6 else self.rng.choice(free)
        rest = [n for n in free if n is not first]
        return [first, *self.rng.sample(rest, min(count - 1, len(rest)))]

    def inject(self) -> None:
        kind = self.rng.choices(self.KINDS, self.WEIGHTS)[0]
        free = [n for n in self.nodes if n.name not in self.busy()]
        duration = self.rng.uniform(1.0, 10.0)
        now = time.monotonic()
        if kind == "kill-all":
            if self.active:
                return  # a power cut comes on its own
            targets = self.nodes
        elif kind == "kill-two":
            if len(free) < 2:
                return
            targets = self.pick(free, 2)
        elif kind == "consul-loss":
            if self.consul_down:
                return
            targets = []
        else:
            if not free:
                return
            targets = self.pick(free)
        names = [n.name for n in targets]
        heal: Callable[[], None]
        if kind in ("kill", "kill-two", "kill-all"):
            for n in targets:
                n.host.kill()

            def heal(ts: list[Node] = targets) -> None:
                for n in ts:
                    n.host.restart(graceful=False)
        elif kind.startswith("pause"):
            if kind == "pause-long":
                duration = self.rng.uniform(12.0, 25.0)  # beyond the session TTL
            else:
                duration = self.rng.uniform(0.3, 1.5)  # within the lease
            targets[0].host.pause()

            def heal(n: Node = targets[0]) -> None:
                at = time.monotonic()
                n.host.resume()
                self.resumed.append((n.name, at, at + RESUME_EXCUSE))
        elif kind.startswith("partition") or kind == "cut-from-consul":
            host = targets[0].host
            others = [h for h in self.bed.hosts.values() if h is not host]
            if kind == "partition":
                rules = self.bed.partition([host])
            elif kind == "partition-out":
                rules = self.bed.partition([host], others, one_way=True)
            elif kind == "partition-in":
                rules = self.bed.partition(others, [host], one_way=True)
            else:
                rules = self.bed.partition([host], [self.bed.hosts["consul"]])

            def heal(r: list[tuple[object, list[str]]] = rules) -> None:  # type: ignore[assignment]
                self.bed.heal(r)  # type: ignore[arg-type]
        elif kind == "disk-full":
            n = targets[0]
            # Below DISK_MIN_FREE (64M): the case the supervisor handles. Filled to the last
            # byte, then crashed, InnoDB 10.11.19 twice could not replay its redo log ("Missing
            # FILE_CREATE, FILE_DELETE or FILE_MODIFY before FILE_CHECKPOINT"): see README.
            ballast = n.host.fill(n.datadir, leave_mb=40)

            def heal(b: Path = ballast) -> None:
                b.unlink(missing_ok=True)
        elif kind == "mysqld-crash":
            pid = targets[0].mysqld_pid()
            if pid is None:
                return
            os.kill(pid, signal.SIGKILL)

            def heal() -> None:
                pass
        else:  # consul-loss
            chost = self.bed.hosts["consul"]
            for proc in chost._spawned:
                if proc.poll() is None:
                    chost.kill_spawned(proc)
            self.consul_down = True

            def heal() -> None:
                start_consul(self.bed.hosts["consul"])
                self.consul_down = False
        fault = Fault(kind, names, heal, now + duration)
        self.active.append(fault)
        self.log(f"fault {kind} on {', '.join(names) or 'the Consul server'} "
                 f"for {duration:.1f}s")

    def heal_due(self, everything: bool = False) -> None:
        now = time.monotonic()
        for f in list(self.active):
            if everything or now >= f.heal_at:
                f.heal()
                self.active.remove(f)
                self.log(f"healed {f.kind} on {', '.join(f.targets) or 'the Consul server'}")


@dataclass
class RecoveryTrace:
    """What each node says it is doing while the cluster recovers after the last heal, logged
    on the timeline whenever it changes: the recovery time printed at the end can be read
    against it (and the hosts' logs: APM_KEEP_LOGS=1 keeps them after a pass too)."""

    nemesis: Nemesis
    nodes: list[Node]
    roles: list[str] = field(default_factory=list)
    said: dict[str, str] = field(default_factory=dict)

    def look(self) -> list[str]:
        self.roles = roles(self.nodes)
        for n, role in zip(self.nodes, self.roles, strict=True):
            try:
                st = n.status()
                doing = (f"{role}: {st['state']}; {st['last_decision']}"
                         + (f"; error: {st['last_error']}" if st["last_error"] else ""))
            except Exception as exc:  # down, paused, or not serving yet: say so
                doing = f"{role}: no /status ({type(exc).__name__})"
            if self.said.get(n.name) != doing:
                self.said[n.name] = doing
                self.nemesis.log(f"recovery: {n.name} {doing[:300]}")
        return self.roles


@pytest.fixture(params=TOPOLOGIES)
def setup(bed: TestBed, request: pytest.FixtureRequest
          ) -> Iterator[tuple[TestBed, list[Node], HAProxy]]:
    volumes = {f"db{i}": 600 for i in (1, 2, 3)}
    nodes = boot_cluster(bed, 3, timeout=180, volumes=volumes, DISK_MIN_FREE="64M",
                         TOPOLOGY=request.param)
    lb = start_router(bed)
    create_table(next(n for n in nodes if n.http("/primary") == 200))
    yield bed, nodes, lb


def test_random_faults_lose_no_acknowledged_write_and_never_make_two_primaries(
        setup: tuple[TestBed, list[Node], HAProxy]) -> None:
    bed, nodes, lb = setup
    rng = random.Random(SEED)
    topology = nodes[0].env.get("TOPOLOGY", "replication")
    print(f"\nnemesis: CHAOS_SEED={SEED} CHAOS_FAULTS={FAULTS} CHAOS_TOPOLOGY={topology} "
          "(replay with these)")
    print(f"nemesis: t=0 is {time.strftime('%H:%M:%S', time.gmtime(time.time() - stamp_now()))}"
          " UTC (the hosts' logs are in UTC)")
    writers = [Writer(lb.host.ip, first_id=k * 10**8, pause=0.01) for k in range(1, 4)]
    for w in writers:
        w.start()
    nemesis = Nemesis(bed, nodes, rng)
    with ReadOnlyWatch(nodes) as watch:
        wait_until(lambda: sum(len(w.acked) for w in writers) > 30, timeout=30,
                   what="the writers to commit")
        started = time.monotonic()  # T0 is the module's: a second topology starts later
        injected = 0
        next_at = time.monotonic()
        while injected < FAULTS or nemesis.active:
            now = time.monotonic()
            nemesis.heal_due()
            if injected < FAULTS and now >= next_at:
                before = len(nemesis.active)
                nemesis.inject()
                injected += 1 if len(nemesis.active) > before else 0
                next_at = now + rng.expovariate(1 / 4.0)  # a fault every 4 s on average
            time.sleep(0.05)
        nemesis.heal_due(everything=True)
        healed = time.monotonic()
        nemesis.log("every fault healed")
        trace = RecoveryTrace(nemesis, nodes)
        wait_until(lambda: trace.look().count("primary") == 1
                   and trace.roles.count("replica") == len(nodes) - 1,
                   timeout=RECOVERY_BOUND, what="one primary and every other node replicating, "
                   "with no manual step", interval=0.2)
        recovered = time.monotonic() - healed
        time.sleep(3)  # writes on the recovered cluster
        for w in writers:
            w.halt()
    acked = {i for w in writers for i in w.acked}
    who = {i: a for w in writers for i, a in w.acked.items()}
    final = next(n for n in nodes if n.http("/primary") == 200)
    for n in nodes:
        try:
            wait_until(lambda n=n: not missing_on(n, acked), timeout=120,
                       what=f"every acknowledged row on {n.name}")
        except TimeoutError:
            lost = sorted(missing_on(n, acked))
            print(f"{n.name} lacks {len(lost)} acknowledged rows, e.g. "
                  f"{[(i, who[i]) for i in lost[:5]]}")
            print("\n".join(nemesis.timeline))
            raise
    errant = {n.name: n.status()["errant"] for n in nodes if n.status()["errant"]}
    assert not errant, f"errant transactions left: {errant}"
    positions = {n.name: n.status()["gtid_current_pos"] for n in nodes}
    wait_until(lambda: len({n.status()["gtid_current_pos"] for n in nodes}) == 1, timeout=60,
               what=f"every node at the same position ({positions})")
    strict, excused = watch.two_writable(nemesis.resumed)
    gaps = max(w.longest_gap(started, healed) for w in writers)
    none_from, none_to = longest_gap((a for w in writers for a in w.acked.values()),
                                     started, healed)
    print(f"nemesis CHAOS_SEED={SEED} ({topology}): {FAULTS} faults, {len(acked)} acknowledged "
          f"writes, all on every node; final primary {final.name}; recovered {recovered:.1f}s "
          f"after the last heal; longest write gap {gaps:.1f}s for one client, "
          f"{none_to - none_from:.1f}s for all (t={none_from - T0:.2f} to {none_to - T0:.2f}); "
          f"two writable in {strict} sample(s) "
          f"(+{excused} within {RESUME_EXCUSE}s of a SIGCONT) of {len(watch.samples)}")
    assert strict == 0, "two nodes were writable at the same time:\n" + "\n".join(
        sorted(nemesis.timeline + [f"{w}  <- TWO WRITABLE" for w in watch.windows(T0)]))
