"""Galera's files and status on the local node (the adapter under galera.py's decisions).

    grastate.dat      the node's saved position: uuid, seqno (-1 while running or after a
                      crash), safe_to_bootstrap
    gvwstate.dat      the last Primary Component's view (pc.recovery); we run pc.recovery=FALSE
                      and remove it before every start: the supervisor alone decides who forms
                      a Primary Component
    sst_in_progress   a state transfer into this data directory did not finish

`recover_position` runs `mariadbd --wsrep-recover` (InnoDB's own record of the last committed
write-set, 0.2 s here) when grastate.dat does not say. Pure parsing is separated from I/O so
that unit tests feed it texts.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import MySQLError
from . import osuser

log = logging.getLogger(__name__)

NULL_UUID = "00000000-0000-0000-0000-000000000000"
GRASTATE = "grastate.dat"
GVWSTATE = "gvwstate.dat"
SST_IN_PROGRESS = "sst_in_progress"
_RECOVERED = re.compile(r"WSREP: Recovered position: ([0-9a-f-]{36}):(-?\d+)")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RECOVER_TIMEOUT = 300.0  # InnoDB's crash recovery of a large redo log can take minutes


@dataclass(frozen=True)
class Position:
    """A Galera state: the cluster's history (uuid) and how far into it (seqno)."""

    uuid: str
    seqno: int

    @property
    def valid(self) -> bool:
        return self.uuid != NULL_UUID and bool(_UUID.match(self.uuid)) and self.seqno >= 0

    def __str__(self) -> str:
        return f"{self.uuid}:{self.seqno}"


@dataclass(frozen=True)
class GraState:
    position: Position
    safe_to_bootstrap: bool


def parse_grastate(text: str) -> GraState | None:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line and not line.lstrip().startswith("#"):
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
    try:
        pos = Position(fields["uuid"], int(fields["seqno"]))
    except (KeyError, ValueError):
        return None
    return GraState(pos, fields.get("safe_to_bootstrap", "0") == "1")


def read_grastate(datadir: Path) -> GraState | None:
    try:
        return parse_grastate((datadir / GRASTATE).read_text())
    except OSError:
        return None


def write_grastate(datadir: Path, pos: Position, safe_to_bootstrap: bool) -> None:
    """What mariadbd reads at its next start: the position a bootstrap starts from (with
    safe_to_bootstrap) or the one a joiner asks IST for."""
    path = datadir / GRASTATE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"# GALERA saved state (written by autopilot-mysql)\nversion: 2.1\n"
                   f"uuid:    {pos.uuid}\nseqno:   {pos.seqno}\n"
                   f"safe_to_bootstrap: {1 if safe_to_bootstrap else 0}\n")
    osuser.give(tmp)
    with open(tmp) as f:
        os.fsync(f.fileno())
    tmp.replace(path)


def forget_primary_view(datadir: Path) -> bool:
    """Remove gvwstate.dat: with it, a node may form a Primary Component on its own."""
    try:
        (datadir / GVWSTATE).unlink()
        return True
    except FileNotFoundError:
        return False


SST_PID = "wsrep_sst.pid"


def forget_sst_pid(datadir: Path) -> bool:
    """Remove the pid file a state transfer script left when it was killed (call only while
    mysqld is not running: then no transfer runs). MariaDB's script takes any live process
    with that pid for a transfer still in progress, and in a container the pids of a restart
    are the same small numbers: a donor then waited 30 s and failed ("Operation already in
    progress"), and its joiner hung (CI nemesis, Galera). True when there was one."""
    try:
        (datadir / SST_PID).unlink()
        return True
    except FileNotFoundError:
        return False


def sst_interrupted(datadir: Path) -> bool:
    return (datadir / SST_IN_PROGRESS).exists()


def parse_recovered(text: str) -> Position | None:
    found = _RECOVERED.findall(text)
    if not found:
        return None
    uuid, seqno = found[-1]  # the last one counts
    return Position(uuid, int(seqno))


def recover_position(cnf: Path) -> tuple[Position | None, str]:
    """`mariadbd --wsrep-recover`: the position InnoDB holds; (None, its output's tail) when it
    could not say."""
    try:
        # A cluster address, or the mariabackup SST method refuses to start at all.
        out = subprocess.run(["mariadbd", f"--defaults-file={cnf}", "--wsrep-recover",
                              "--wsrep-cluster-address=gcomm://", "--log-error=/dev/stderr"],
                             capture_output=True, text=True, timeout=RECOVER_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MySQLError(f"mariadbd --wsrep-recover failed: {exc}") from exc
    text = out.stdout + out.stderr
    return parse_recovered(text), "\n".join(text.splitlines()[-5:])


_COMPONENT = re.compile(r"WSREP: New COMPONENT: primary = (yes|no)\b")


def component_of(line: str) -> bool | None:
    """A mysqld log line announcing its new group view (Galera's gcs_group: "New COMPONENT:
    primary = yes|no, ..."): whether that view is a Primary Component; None for other lines.
    The only word on it while mysqld does not answer queries yet (joining)."""
    m = _COMPONENT.search(line)
    return None if m is None else m.group(1) == "yes"


_EVICTED = "this node has been evicted out of the cluster"


def evicted(line: str) -> bool:
    """A mysqld log line saying a peer evicted this node (its group layer must restart)."""
    return _EVICTED in line


_VIEW_STATUS = re.compile(r"^\s+status: (primary|non-primary|disconnected)\s*$")


def view_processed(line: str) -> bool:
    """The "status:" line of the view mysqld logs once it has processed a new group view
    (its status variables say so from now on; "New COMPONENT" comes before)."""
    return _VIEW_STATUS.match(line) is not None


def evicting(line: str) -> bool:
    """A mysqld log line saying it evicts a member ("Evicting node <uuid> permanently")."""
    return "WSREP: Evicting node " in line


_NONLIVE = re.compile(r"WSREP: .*nonlive peers: (.*)$")
_PEER = re.compile(r"^tcp://(.+):(\d+)$")


def nonlive_peers(line: str) -> tuple[tuple[str, int], ...]:
    """The Galera addresses (host, port) a mysqld log line says it just lost its connection to
    (gcomm's "turning message relay requesting on, nonlive peers: tcp://10.0.0.2:4567 ...");
    () for other lines."""
    m = _NONLIVE.search(line)
    if m is None:
        return ()
    out = []
    for word in m.group(1).split():
        peer = _PEER.match(word.rstrip(","))
        if peer is not None:
            out.append((peer.group(1).strip("[]"), int(peer.group(2))))
    return tuple(out)


@dataclass(frozen=True)
class WsrepStatus:
    """SHOW GLOBAL STATUS LIKE 'wsrep%' of a running node."""

    cluster_status: str  # Primary, Non-primary, Disconnected
    local_state: int  # 1 Joining, 2 Donor/Desynced, 3 Joined, 4 Synced
    state_comment: str
    ready: bool
    uuid: str  # wsrep_cluster_state_uuid
    last_committed: int
    cluster_size: int
    incoming: tuple[str, ...]  # client addresses (host:port) of the component's members

    @property
    def primary(self) -> bool:
        return self.cluster_status == "Primary"

    @property
    def synced(self) -> bool:
        return self.primary and self.local_state == 4 and self.ready

    def has_member(self, address: str) -> bool:
        return any(a.rsplit(":", 1)[0] == address for a in self.incoming)


def parse_status(rows: dict[str, str]) -> WsrepStatus:
    def num(name: str) -> int:
        try:
            return int(rows.get(name, "") or 0)
        except ValueError:
            return 0
    incoming = tuple(a for a in rows.get("wsrep_incoming_addresses", "").split(",") if a)
    return WsrepStatus(
        cluster_status=rows.get("wsrep_cluster_status", "Disconnected"),
        local_state=num("wsrep_local_state"),
        state_comment=rows.get("wsrep_local_state_comment", ""),
        ready=rows.get("wsrep_ready", "OFF") == "ON",
        uuid=rows.get("wsrep_cluster_state_uuid", ""),
        last_committed=num("wsrep_last_committed"), cluster_size=num("wsrep_cluster_size"),
        incoming=incoming)


def sst_user_sql(os_user: str = "mysql") -> list[tuple[str, tuple[str, ...]]]:
    """The SST donor's account: the OS user mariadbd runs as, over the unix socket (no
    password stored anywhere: wsrep_sst_auth=mysql:), with only what mariabackup needs. It
    also loses READ ONLY ADMIN, so read_only fences it like every account but root@localhost."""
    return [
        (f"CREATE USER IF NOT EXISTS `{os_user}`@localhost IDENTIFIED VIA unix_socket", ()),
        (f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM `{os_user}`@localhost", ()),
        (f"GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO `{os_user}`@localhost",
         ()),
    ]
