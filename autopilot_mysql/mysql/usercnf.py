"""The user's own MariaDB settings, as the official image takes them: `*.cnf` files in
/etc/mysql/conf.d and /etc/mysql/mariadb.conf.d (MYSQL_CONF_DIRS), read after the rendered
my.cnf so that they win, and options after the image name (`command: --max-connections=500`),
given to mariadbd after everything else.

Both are checked before mysqld starts: a setting the supervisor's safety rests on (read_only,
server_id, the binary log and GTIDs, semi-synchronous replication, Galera's wsrep_*, where
the data and the socket are) is refused with an error that names the file, the line and why,
instead of starting a node that could, say, accept writes as a replica. Tunables
(max_connections, innodb_buffer_pool_size, character sets, timeouts ...) pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# The option groups mariadbd reads (the user's [client] and such are none of our business).
SERVER_GROUPS = re.compile(r"^(mysqld|mariadbd|server|mariadb|galera|embedded"
                           r"|mysqld-[0-9.]+|mariadb-[0-9.]+|mariadbd-[0-9.]+)$")

# name -> why the supervisor owns it
PROTECTED = {
    "user": "mariadbd runs as the mysql user the data volume belongs to",
    "datadir": "the data volume is MYSQL_DATADIR",
    "socket": "the supervisor speaks to mysqld on MYSQL_RUNDIR's socket",
    "pid_file": "the supervisor manages mysqld's process itself",
    "port": "other nodes, HAProxy and replication reach MariaDB on 3306",
    "bind_address": "other nodes must reach this one",
    "skip_networking": "other nodes must reach this one",
    "skip_grant_tables": "fencing rests on the accounts' privileges",
    "server_id": "allocated once per data directory from Consul, unique in the cluster",
    "report_host": "the address other nodes and the election know this node by",
    "read_only": "only the holder of the leader lock may be writable (fencing)",
    "super_read_only": "only the holder of the leader lock may be writable (fencing)",
    "skip_slave_start": "replication starts only towards the elected primary",
    "skip_replica_start": "replication starts only towards the elected primary",
    "log_bin": "replication, elections and point-in-time recovery need the binary log",
    "log_bin_index": "the supervisor reads the binary log by this name",
    "skip_log_bin": "replication, elections and point-in-time recovery need the binary log",
    "disable_log_bin": "replication, elections and point-in-time recovery need the binary log",
    "log_slave_updates": "a replica's binary log must hold what it applied (failover)",
    "log_replica_updates": "a replica's binary log must hold what it applied (failover)",
    "binlog_format": "row events are what the archive and the election compare",
    "sync_binlog": "an acknowledged commit must survive a crash",
    "innodb_flush_log_at_trx_commit": "an acknowledged commit must survive a crash",
    "relay_log": "the supervisor applies and inspects the relay log by this name",
    "relay_log_index": "the supervisor applies and inspects the relay log by this name",
    "ignore_db_dirs": "the supervisor's scratch space must stay hidden",
    "slave_net_timeout": "failure detection assumes it",
}
PROTECTED_PREFIXES = {
    "gtid_": "GTID positions are what elections compare",
    "rpl_semi_sync_": "acknowledgements are switched by the supervisor only (election.I2-I4)",
    "wsrep_": "Galera's settings come from Consul and the census (galera.py)",
}


class UserConfigError(ValueError):
    """A user setting the supervisor refuses; str() names where and why."""


@dataclass(frozen=True)
class Setting:
    name: str  # normalized: lower case, '-' as '_', without loose_
    value: str
    where: str  # file:line, or "command line"


def normalize(name: str) -> str:
    """As mariadbd reads an option's name: case and - or _ alike, loose_ ignored."""
    return name.strip().lower().replace("-", "_").removeprefix("loose_")


def why_protected(name: str) -> str | None:
    """Why the supervisor owns option `name` (None: the user's to set). A boolean's
    --skip-, --disable- and --enable- forms name the option itself."""
    n = normalize(name)
    candidates = [n] + [n[len(p):] for p in ("skip_", "disable_", "enable_") if n.startswith(p)]
    for c in candidates:
        if c in PROTECTED:
            return PROTECTED[c]
        for prefix, why in PROTECTED_PREFIXES.items():
            if c.startswith(prefix):
                return why
    return None


def read_dirs(dirs: Sequence[Path]) -> list[Setting]:
    """Every server setting of the `*.cnf` files in `dirs` (in MariaDB's order: the
    directories in turn, each one's files by name), includes followed."""
    out: list[Setting] = []
    for d in dirs:
        if d.is_dir():
            for f in sorted(d.glob("*.cnf")):
                out.extend(read_file(f, depth=0))
    return out


def read_file(path: Path, depth: int) -> list[Setting]:
    if depth > 10:
        raise UserConfigError(f"{path}: includes nested more than 10 deep (a loop?)")
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise UserConfigError(f"{path}: unreadable ({exc.strerror}); mysqld would refuse "
                              "to start on it too") from exc
    out: list[Setting] = []
    group = ""
    for i, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("!include "):
            out.extend(read_file(_resolve(path, line[9:].strip()), depth + 1))
            continue
        if line.startswith("!includedir "):
            d = _resolve(path, line[12:].strip())
            for f in sorted(d.glob("*.cnf")) if d.is_dir() else ():
                out.extend(read_file(f, depth + 1))
            continue
        if line.startswith("["):
            group = line.strip("[] ").lower()
            continue
        if not SERVER_GROUPS.match(group):
            continue
        name, _, value = line.partition("=")
        out.append(Setting(normalize(name), value.split("#")[0].strip().strip("'\""),
                           f"{path}:{i}"))
    return out


def _resolve(base: Path, target: str) -> Path:
    p = Path(target)
    return p if p.is_absolute() else (base.parent / p).resolve()


def from_args(args: Iterable[str]) -> list[Setting]:
    """mariadbd options given on the command line (`--name[=value]`)."""
    out: list[Setting] = []
    for a in args:
        if not a.startswith("--") or a == "--":
            raise UserConfigError(f"{a!r}: options for mariadbd are given as --name=value "
                                  "(example: --max-connections=500)")
        name, _, value = a[2:].partition("=")
        if normalize(name) in ("defaults_file", "defaults_extra_file", "no_defaults"):
            raise UserConfigError(f"{a}: the supervisor renders mariadbd's configuration "
                                  "itself; put your settings in /etc/mysql/conf.d/*.cnf")
        out.append(Setting(normalize(name), value, "command line"))
    return out


def check(settings: Iterable[Setting]) -> list[str]:
    """The problems: one line per refused setting, naming where, what and why."""
    problems = []
    for s in settings:
        why = why_protected(s.name)
        if why is not None:
            problems.append(f"{s.where}: {s.name} is set by autopilot-mysql and may not be "
                            f"overridden ({why}); remove it")
    return problems
