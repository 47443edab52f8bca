"""The test bed: a bridge, a private /24, and hosts made of Linux namespaces.

    with TestBed() as bed:
        db1, db2 = bed.add_host("db1"), bed.add_host("db2")
        bed.partition([db1], [db2])          # both ways
        bed.partition([db1], [db2], one_way=True)   # db1 -> db2 dropped, db2 -> db1 passes
        bed.heal()

Addressing: the bridge holds .1 on the root side, so the harness (tests, benchmarks) reaches
every host over TCP; hosts get .10, .11, ... and have no default route, so nothing they send can
leave the /24. Partitions are iptables DROP rules on the receiving host's INPUT chain, against the
other hosts' addresses only: the harness at .1 still sees a partitioned host (an observer outside
the fault), and a one-way partition is a drop on one side.

Everything created is recorded in a state file under /run/apm-testbed before it is created, and
removed by id on close(), at interpreter exit, or by the next run's sweep if this one crashed.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .host import Host
from .util import TestBedError, pid_alive, pid_running, proc_start_time, run

STATE_DIR = Path("/run/apm-testbed")
# Short paths: unix socket paths are limited to ~107 bytes.
ROOT_DIR = Path("/var/tmp")
PREFIX = "apm"  # every netns, bridge and veth of ours starts with it
CANDIDATE_NETS = [f"10.213.{n}.0/24" for n in range(0, 250)]


class TestBed:
    __test__ = False  # not a pytest test class

    def __init__(self, *, sweep: bool = True, persistent: bool = False) -> None:
        """persistent=True (the demo): outlives this process; `teardown_persistent` ends it."""
        if os.geteuid() != 0:
            raise TestBedError("the test bed needs root (network namespaces, bridges, iptables)")
        self.hosts: dict[str, Host] = {}
        self._rules: list[tuple[Host, list[str]]] = []
        self._closed = False
        self.persistent = persistent
        self._next_ip = 10
        # Several beds at once (pytest -n, a demo beside a test run): the sweep, the choice
        # of an id and a subnet, and the state file that claims them happen under one lock,
        # so that no bed sweeps another's namespaces or takes its subnet.
        with bed_lock():
            if sweep:
                sweep_leftovers()
            self.id = secrets.token_hex(2)
            while (STATE_DIR / f"{self.id}.json").exists():
                self.id = secrets.token_hex(2)
            self.bridge = f"{PREFIX}{self.id}br"
            self.root = ROOT_DIR / f"{PREFIX}-{self.id}"
            self.state_file = STATE_DIR / f"{self.id}.json"
            self.net = self._pick_subnet()
            hosts_iter = self.net.hosts()
            self.gateway = str(next(hosts_iter))
            self.save()  # recorded before anything is created, so a crash leaves a trail
            self.root.mkdir(mode=0o755)
            run(["ip", "link", "add", self.bridge, "type", "bridge"])
            run(["ip", "addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev",
                 self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])
        if not persistent:
            atexit.register(self.close)

    # --- hosts --------------------------------------------------------------------------------

    @classmethod
    def reopen(cls, state: dict[str, Any]) -> TestBed:
        """A persistent bed (the demo) from its state, in a later process: to add hosts to it
        or remove some (`docker compose up --scale`). Nothing is created."""
        bed = cls.__new__(cls)
        bed.id = state["id"]
        bed.bridge = state["bridge"]
        bed.root = Path(state["root"])
        bed.state_file = STATE_DIR / f"{bed.id}.json"
        bed.hosts = {}
        bed._rules = []
        bed._closed = False
        bed.persistent = True
        bed.net = ipaddress.ip_network(state["net"])
        bed.gateway = str(next(bed.net.hosts()))
        bed._next_ip = int(state.get("next_ip", 10 + len(state["hosts"])))
        bed._next_veth = int(state.get("next_veth", len(state["hosts"])))
        for name, h in state["hosts"].items():
            host = Host(name=name, netns=f"{PREFIX}{bed.id}-{name}", ip=h["ip"],
                        veth=h.get("veth", ""), root=bed.root / name)
            if h.get("pid1") and proc_start_time(h["pid1"]) == h.get("pid1_start"):
                host.pid1 = h["pid1"]
                host._pid1_start = h["pid1_start"]
            bed.hosts[name] = host
        return bed

    def remove_host(self, name: str, timeout: float = 40) -> None:
        """Stop a host gracefully (SIGTERM to its PID 1, as `docker stop`), then remove it,
        its namespace and its directory (a container scaled away, with its volume)."""
        host = self.hosts.pop(name)
        if host.pid1 and proc_start_time(host.pid1) == host._pid1_start:
            try:
                os.kill(host.pid1, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while pid_running(host.pid1) and time.monotonic() < deadline:
                time.sleep(0.1)
        _remove(self.id, [host.netns], None, None)
        shutil.rmtree(host.dir, ignore_errors=True)
        self._write_hosts_files()
        self.save()

    def add_host(self, name: str) -> Host:
        if name in self.hosts:
            raise TestBedError(f"host {name} exists already")
        idx = getattr(self, "_next_veth", len(self.hosts))
        self._next_veth = idx + 1
        ip = str(self.net.network_address + self._next_ip)
        self._next_ip += 1
        netns = f"{PREFIX}{self.id}-{name}"
        veth = f"{PREFIX}{self.id}v{idx}"
        host = Host(name=name, netns=netns, ip=ip, veth=veth, root=self.root / name)
        self.hosts[name] = host
        self.save()
        run(["ip", "netns", "add", netns])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
        run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        run(["ip", "-n", netns, "addr", "add", f"{ip}/{self.net.prefixlen}", "dev", "eth0"])
        run(["ip", "-n", netns, "link", "set", "eth0", "up"])
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        etc = Path("/etc/netns") / netns
        etc.mkdir(parents=True, exist_ok=True)
        # No DNS server is reachable from a host: resolution is the hosts file (and Consul DNS).
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        self._write_hosts_files()
        return host

    def _write_hosts_files(self) -> None:
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost",
                 f"{self.gateway} harness"]
        lines += [f"{h.ip} {h.name}" for h in self.hosts.values()]
        text = "\n".join(lines) + "\n"
        for h in self.hosts.values():
            # Truncate and rewrite in place: the bind mount holds the inode, so running hosts
            # see hosts added after they booted.
            path = Path("/etc/netns") / h.netns / "hosts"
            with open(path, "w") as f:
                f.write(text)

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    # --- network faults ------------------------------------------------------------------------

    def partition(self, side_a: list[Host], side_b: list[Host] | None = None, *,
                  one_way: bool = False) -> list[tuple[Host, list[str]]]:
        """Cut side_a off from side_b (default: every other host). Returns the rules made, for
        `heal(rules)` to lift just this partition.

        one_way=True drops only traffic from side_a to side_b; side_b to side_a still passes
        (TCP between them then fails both ways, since replies are lost; UDP shows the direction).
        """
        if side_b is None:
            side_b = [h for h in self.hosts.values() if h not in side_a]
        made = []
        for receiver, senders in ([(b, side_a) for b in side_b]
                                  + ([] if one_way else [(a, side_b) for a in side_a])):
            for sender in senders:
                rule = ["INPUT", "-s", f"{sender.ip}/32", "-j", "DROP"]
                run(["ip", "netns", "exec", receiver.netns, "iptables", "-w", "-I", *rule])
                self._rules.append((receiver, rule))
                made.append((receiver, rule))
        return made

    def isolate(self, host: Host) -> None:
        """Take the host's link down: it loses every peer, the harness included."""
        run(["ip", "link", "set", host.veth, "down"])

    def heal(self, rules: list[tuple[Host, list[str]]] | None = None) -> None:
        """Remove every partition and bring every link back up; with `rules` (what one
        `partition` call returned), lift just that partition."""
        chosen = list(self._rules) if rules is None else list(rules)
        for receiver, rule in reversed(chosen):
            run(["ip", "netns", "exec", receiver.netns, "iptables", "-w", "-D", *rule],
                check=False)
            if (receiver, rule) in self._rules:
                self._rules.remove((receiver, rule))
        if rules is None:
            for h in self.hosts.values():
                run(["ip", "link", "set", h.veth, "up"], check=False)

    # --- teardown -------------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for host in self.hosts.values():
            host.shutdown()
        _remove(self.id, [h.netns for h in self.hosts.values()], self.bridge, self.root)
        self.state_file.unlink(missing_ok=True)

    def __enter__(self) -> TestBed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ------------------------------------------------------------------------------

    def save(self) -> None:
        """Record what exists (call again after booting hosts, for `teardown_persistent`)."""
        state: dict[str, Any] = {
            "pid": os.getpid(), "start": proc_start_time(os.getpid()), "net": str(self.net),
            "bridge": self.bridge, "root": str(self.root), "persistent": self.persistent,
            "netns": [h.netns for h in self.hosts.values()],
            "next_ip": self._next_ip, "next_veth": getattr(self, "_next_veth", len(self.hosts)),
            "hosts": {h.name: {"ip": h.ip, "veth": h.veth, "pid1": h.pid1,
                               "pid1_start": proc_start_time(h.pid1) if h.pid1 else None}
                      for h in self.hosts.values()},
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_file)

    @staticmethod
    def _pick_subnet() -> ipaddress.IPv4Network:
        used: list[ipaddress.IPv4Network] = []
        for line in run(["ip", "-4", "-o", "addr", "show"]).stdout.splitlines():
            used.append(ipaddress.ip_interface(line.split()[3]).network)
        for line in run(["ip", "-4", "route", "show", "table", "all"]).stdout.splitlines():
            dest = line.split()[0]
            if dest[0].isdigit():
                used.append(ipaddress.ip_network(dest, strict=False))
        for f in STATE_DIR.glob("*.json"):
            try:
                used.append(ipaddress.ip_network(json.loads(f.read_text())["net"]))
            except (OSError, ValueError, KeyError):
                continue
        for cand in CANDIDATE_NETS:
            net = ipaddress.ip_network(cand)
            if not any(net.overlaps(u) for u in used):
                return net
        raise TestBedError("no free /24 in 10.213.0.0/16 for the test bed")


@contextlib.contextmanager
def bed_lock() -> Iterator[None]:
    """Held while a bed claims an id and a subnet, and while anything looks for leftovers."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def sweep_leftovers() -> list[str]:
    """Remove what crashed earlier runs left (their owner process is gone). Returns their ids.
    Call it under bed_lock: a bed created meanwhile must not look like a leftover."""
    removed = []
    live_ids = set()
    for st in _states():
        if st["owner_alive"] or st.get("persistent"):  # a running demo is not a leftover
            live_ids.add(st["id"])
            continue
        _remove(st["id"], st.get("netns", []), st.get("bridge"), Path(st["root"]))
        (STATE_DIR / f"{st['id']}.json").unlink(missing_ok=True)
        removed.append(st["id"])
    if STATE_DIR.exists():  # unreadable state files (a crash mid-write) go too
        for f in STATE_DIR.glob("*.json"):
            try:
                json.loads(f.read_text())
            except (OSError, ValueError):
                f.unlink(missing_ok=True)
    # Namespaces and bridges of ours that no state file owns (a state file lost by hand).
    def orphan_id(name: str) -> str | None:
        run_id = name[len(PREFIX):len(PREFIX) + 4]
        return run_id if name.startswith(PREFIX) and run_id not in live_ids else None

    for line in run(["ip", "netns", "list"], check=False).stdout.splitlines():
        ns = line.split()[0] if line.strip() else ""
        if "-" in ns and (run_id := orphan_id(ns)):
            _remove(run_id, [ns], None, None)
    links = run(["ip", "-o", "link", "show", "type", "bridge"], check=False).stdout
    for line in links.splitlines():
        br = line.split(":")[1].strip().split("@")[0]
        if br.endswith("br") and orphan_id(br):
            run(["ip", "link", "del", br], check=False)
    return removed


def _states() -> list[dict[str, Any]]:
    """Every readable state file, with its bed id and whether its owner process still runs."""
    out = []
    for f in sorted(STATE_DIR.glob("*.json")) if STATE_DIR.exists() else []:
        try:
            st = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        st["id"] = f.stem
        st["owner_alive"] = pid_alive(st["pid"]) and proc_start_time(st["pid"]) == st.get("start")
        out.append(st)
    return out


def other_live_beds() -> list[dict[str, Any]]:
    """Beds this process does not own whose owner still runs (another test run, a demo)."""
    return [st for st in _states() if st.get("persistent")
            or (st["owner_alive"] and st["pid"] != os.getpid())]


def persistent_beds() -> list[dict[str, Any]]:
    """State of the beds that outlive their creator (the demo)."""
    return [st for st in _states() if st.get("persistent")]


def teardown_persistent(state: dict[str, Any], timeout: float = 40) -> None:
    """Stop a persistent bed: SIGTERM to each host's PID 1 (a graceful stop, as `docker
    stop`), SIGKILL of whatever is left after `timeout`, then remove everything by id."""
    pids = [h["pid1"] for h in state.get("hosts", {}).values()
            if h.get("pid1") and proc_start_time(h["pid1"]) == h.get("pid1_start")]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(pid_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    _remove(state["id"], state.get("netns", []), state.get("bridge"), Path(state["root"]))
    (STATE_DIR / f"{state['id']}.json").unlink(missing_ok=True)


def _remove(run_id: str, netns: list[str], bridge: str | None, root: Path | None) -> None:
    """Kill every process in the given namespaces (by pid), then delete them. Never raises."""
    for _ in range(3):
        pids = []
        for ns in netns:
            out = run(["ip", "netns", "pids", ns], check=False).stdout
            pids += [int(p) for p in out.split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            _wait_gone(pid)
    for ns in netns:
        run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
    if bridge:
        run(["ip", "link", "del", bridge], check=False)
    if root is not None and root.name.startswith(f"{PREFIX}-{run_id}"):
        for mount in mounts_under(root):  # small data volumes (Host.small_volume)
            run(["umount", "-l", mount], check=False)
        shutil.rmtree(root, ignore_errors=True)


def mounts_under(root: Path) -> list[str]:
    """Mount points below `root`, deepest first."""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1] for line in lines if len(line.split()) > 1]
    return sorted((p for p in points if p.startswith(f"{root}/")), key=len, reverse=True)


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while pid_running(pid) and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child (a launcher)
        except ChildProcessError:
            pass
        time.sleep(0.02)
