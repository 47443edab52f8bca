"""Settings from the environment, in two phases (as ContainerPilot does):

1. `load_settings(env)` reads and validates every variable and collects *all* problems; if there
   is any, it raises one ConfigError that lists them, each naming the variable, what is wrong and
   an example of a good value. Nothing on disk or in Consul is touched before this succeeds.
2. The result is a frozen `Settings`, from which the daemon builds its runtime objects.

Names follow the official MariaDB image where they overlap (MARIADB_* or MYSQL_*, every secret
also as NAME_FILE). The full list with defaults is `VARIABLES` below and in the README.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exceptions import ConfigError
from .utils import parse_size

# name -> (default, one-line description). The README's table is generated from the same facts.
VARIABLES: dict[str, tuple[str | None, str]] = {
    "MARIADB_ROOT_PASSWORD": (None, "root password (or MYSQL_ROOT_PASSWORD; _FILE variants)"),
    "MARIADB_RANDOM_ROOT_PASSWORD": ("", "yes: a random root password at each node's first "
                                         "boot, printed once in its log"),
    "MARIADB_ROOT_HOST": ("%", "where root may log in from; localhost: no remote root"),
    "MARIADB_INITDB_SKIP_TZINFO": ("", "yes: no time-zone tables at the first boot"),
    "MARIADB_DATABASE": ("", "database created at first boot (or MYSQL_DATABASE)"),
    "MARIADB_USER": ("", "application user created at first boot (or MYSQL_USER)"),
    "MARIADB_PASSWORD": ("", "its password (or MYSQL_PASSWORD; _FILE variants)"),
    "MYSQL_REPL_USER": ("repl", "replication user"),
    "MYSQL_REPL_PASSWORD": (None, "replication password (_FILE variant)"),
    "TOPOLOGY": ("replication", "replication (GTID, semi-synchronous) or galera"),
    "CONSUL": ("consul:8500", "Consul address, host[:port] or http(s)://host[:port]; with "
               "CONSUL_AGENT, the servers the local agent joins (a comma-separated list, or "
               "one DNS name with an address per server)"),
    "CONSUL_HTTP_SSL": ("false", "speak https to CONSUL (as a https:// URL does)"),
    "CONSUL_HTTP_TOKEN": ("", "the ACL token every Consul call carries"),
    "CONSUL_CACERT": ("", "the CA file that signed Consul's https certificate"),
    "CONSUL_HTTP_SSL_VERIFY": ("true", "verify Consul's https certificate"),
    "CONSUL_DATACENTER": ("", "the Consul datacenter (default: the agent's)"),
    "CONSUL_ENCRYPT": ("", "the local agent's gossip encryption key (consul keygen)"),
    "CONSUL_AGENT": ("false", "run a local Consul client agent that joins CONSUL"),
    "NOFAILOVER": ("false", "this node is never elected primary (nor Galera writer)"),
    "NOLOADBALANCE": ("false", "this node is kept out of the read pool (/replica answers 503)"),
    "SERVICE_NAME": ("mysql", "Consul service name"),
    "NODE_NAME": ("", "this node's name (default: the hostname)"),
    "ADVERTISE_ADDRESS": ("", "address other nodes use (default: the hostname's address)"),
    "HEALTH_PORT": ("9200", "port of the HTTP health endpoint"),
    "API_TOKEN": ("", "token for the HTTP control endpoints (_FILE variant); unset: disabled"),
    "LOG_LEVEL": ("INFO", "DEBUG, INFO, WARNING or ERROR"),
    "LOG_FORMAT": ("text", "text or json"),
    "INNODB_BUFFER_POOL_SIZE": ("", "e.g. 512M; default: half the container's memory limit"),
    "STOP_TIMEOUT": ("30", "seconds a graceful stop may take before SIGKILL"),
    "MYSQL_CONF_DIRS": ("/etc/mysql/conf.d:/etc/mysql/mariadb.conf.d", "directories of "
                        "your own *.cnf files, read after ours (colon-separated)"),
    "INITDB_DIR": ("/docker-entrypoint-initdb.d", "*.sql(.gz|.xz|.zst) and *.sh run once per "
                   "cluster, on its first primary"),
    "HOOKS_DIR": ("/etc/autopilot-mysql/hooks.d", "user handlers run on events (hooks.py)"),
    "HOOK_TIMEOUT": ("30", "seconds one hook may run before it is killed"),
    "HOOK_HEALTH_INTERVAL": ("5", "seconds between runs of the health hook"),
    "SESSION_TTL": ("10", "Consul session TTL in seconds (10 to 60)"),
    "LOOP_WAIT": ("0.5", "seconds between HA cycles when nothing happens"),
    "SEMI_SYNC_TIMEOUT": ("10", "seconds a commit waits for a replica's acknowledgement before "
                          "the primary continues alone; 0: wait forever"),
    "FAILSAFE": ("true", "while Consul is down, the primary keeps writing as long as every "
                 "member confirms over HTTP that it follows it (failsafe.py); false: it fences "
                 "once its lease runs out"),
    "REPLICA_MAX_LAG": ("10", "seconds of lag above which /replica answers 503"),
    "DISK_MIN_FREE": ("256M", "free space of the data volume below which it counts as full: a "
                      "primary hands over to a replica with room"),
    "MYSQLD_MAX_RESTARTS": ("5", "mysqld crashes tolerated within MYSQLD_RESTART_WINDOW"),
    "MYSQLD_RESTART_WINDOW": ("300", "seconds; more crashes than allowed in it: stay down"),
    "MYSQL_DATADIR": ("/var/lib/mysql", "data directory (the container's volume)"),
    "MYSQL_RUNDIR": ("/run/mysqld", "socket, pid file and rendered my.cnf"),
    "S3_BUCKET": ("", "bucket for snapshots; unset: no snapshots (new nodes copy by "
                  "replication)"),
    "S3_ENDPOINT": ("", "S3-compatible endpoint URL, e.g. http://minio:9000; unset: "
                    "AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS"),
    "S3_CREATE_BUCKET": ("false", "create S3_BUCKET when it does not exist (compose's bundled "
                         "MinIO)"),
    "S3_ADDRESSING_STYLE": ("", "path, virtual or auto (default: virtual on AWS, path on "
                            "other stores)"),
    "S3_PREFIX": ("", "key prefix inside the bucket (default: SERVICE_NAME)"),
    "S3_REGION": ("", "region of the bucket (default: AWS_REGION, AWS_DEFAULT_REGION, "
                  "us-east-1)"),
    "AWS_ACCESS_KEY_ID": ("", "S3 access key (_FILE variant); unset: boto3's usual sources"),
    "AWS_SECRET_ACCESS_KEY": ("", "S3 secret key (_FILE variant)"),
    "S3_VERIFY_TLS": ("true", "verify the endpoint's TLS certificate: true, false, or a CA "
                      "bundle path"),
    "S3_TIMEOUT": ("30", "seconds an S3 request may stall before it is retried (3 attempts)"),
    "SNAPSHOT_INTERVAL": ("86400", "seconds between scheduled snapshots; 0: only on demand "
                          "and on binary-log rotation"),
    "SNAPSHOT_BINLOG_ROTATIONS": ("4", "take a snapshot once the primary's binary log has "
                                  "rotated this many times since the last one; 0: off"),
    "SNAPSHOT_KEEP": ("3", "keep at least the newest N good snapshots"),
    "SNAPSHOT_KEEP_DAYS": ("7", "also keep every snapshot younger than this many days"),
    "SNAPSHOT_COMPRESSION_LEVEL": ("3", "zstd level, 1 (fast) to 19 (small)"),
    "SNAPSHOT_VERIFY": ("true", "restore each new snapshot into scratch space on the data "
                        "volume and read every table in a throwaway mysqld before the cluster "
                        "uses it"),
    "BINLOG_ARCHIVE_INTERVAL": ("5", "with S3_BUCKET, the binary log is archived to the bucket "
                                "for point-in-time recovery at least this often (seconds: the "
                                "writes at risk if the cluster is lost); 0: no archive"),
    "REPROVISION": ("true", "rebuild a node the primary refuses (errant transactions, or behind "
                    "its purged binary logs) from the latest snapshot, else a copy of a live "
                    "node; its old data kept aside until it works (alias SNAPSHOT_REPROVISION)"),
}

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TOPOLOGIES = ("replication", "galera")
_NAME = re.compile(r"^[A-Za-z0-9_$-]{1,64}$")
_USER = re.compile(r"^[A-Za-z0-9_.$-]{1,80}$")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class SnapshotSettings:
    """Where snapshots go and when they are taken; absent (None) when S3_BUCKET is unset."""

    bucket: str
    endpoint: str
    prefix: str
    region: str
    access_key: str
    secret_key: str
    verify_tls: bool | str  # False, True, or a CA bundle path
    timeout: float
    interval: float
    binlog_rotations: int
    keep: int
    keep_days: float
    compression_level: int
    verify: bool
    archive_interval: float = 5.0  # BINLOG_ARCHIVE_INTERVAL; 0: no binary-log archive
    addressing_style: str = "path"  # S3_ADDRESSING_STYLE: path, virtual (AWS's default), auto
    create_bucket: bool = False  # S3_CREATE_BUCKET: create it when it does not exist


# The settings every node must share, because the safety rules compare one node's timing with
# another's (election.I1/I6: a lease and the grace that waits it out). They live once in Consul
# (service/<SERVICE_NAME>/config); the environment seeds them at the cluster's first boot.
CLUSTER_VARIABLES = ("LOOP_WAIT", "SESSION_TTL", "SEMI_SYNC_TIMEOUT", "FAILSAFE")


@dataclass(frozen=True)
class ClusterSettings:
    loop_wait: float
    session_ttl: float
    semi_sync_timeout: float
    failsafe: bool

    @property
    def lease(self) -> float:
        """election.I1: a primary fences when no heartbeat proved its lock for this long."""
        return 2 * self.loop_wait + 1.0

    def doc(self) -> dict[str, str]:
        return {"LOOP_WAIT": f"{self.loop_wait:g}", "SESSION_TTL": f"{self.session_ttl:g}",
                "SEMI_SYNC_TIMEOUT": f"{self.semi_sync_timeout:g}",
                "FAILSAFE": "true" if self.failsafe else "false"}


def _cluster(r: _Reader) -> ClusterSettings:
    ttl = r.number("SESSION_TTL", 10, 60, "10")
    loop_wait = r.number("LOOP_WAIT", 0.1, 10, "1")
    if loop_wait * 4 > ttl:
        r.problem("LOOP_WAIT", f"{loop_wait:g}s is too long for SESSION_TTL={ttl:g}s: a cycle "
                  "must run at least 4 times per TTL so the session is renewed (and a lost "
                  "lock fenced) in time", f"{ttl / 4:g}")
    return ClusterSettings(loop_wait=loop_wait, session_ttl=ttl,
                           semi_sync_timeout=r.number("SEMI_SYNC_TIMEOUT", 0, 86400, "10"),
                           failsafe=r.boolean("FAILSAFE"))


def cluster_settings(values: Mapping[str, str]) -> ClusterSettings:
    """The shared settings from a mapping of their variable names (Consul's key, or
    `autopilot-mysql config set`), validated by the same rules as the environment; unknown
    names are refused. Raises ConfigError listing every problem."""
    r = _Reader({k: str(v) for k, v in values.items()})
    for k in values:
        if k not in CLUSTER_VARIABLES:
            r.problems.append(f"{k}: not a cluster-wide setting (those are "
                              f"{', '.join(CLUSTER_VARIABLES)})")
    cs = _cluster(r)
    if r.problems:
        raise ConfigError(r.problems)
    return cs


@dataclass(frozen=True)
class Settings:
    root_password: str
    database: str
    user: str
    password: str
    repl_user: str
    repl_password: str
    consul_host: str
    consul_port: int
    consul_agent: bool
    service_name: str
    node_name: str
    advertise_address: str
    health_port: int
    api_token: str
    log_level: str
    log_format: str
    buffer_pool_size: int | None
    stop_timeout: float
    session_ttl: float
    loop_wait: float
    semi_sync_timeout: float
    failsafe: bool
    replica_max_lag: int
    disk_min_free: int
    reprovision: bool
    mysqld_max_restarts: int
    mysqld_restart_window: float
    datadir: Path
    rundir: Path
    snapshots: SnapshotSettings | None = None
    topology: str = "replication"  # TOPOLOGIES
    root_host: str = "%"  # MARIADB_ROOT_HOST: where root may log in from (localhost: no remote)
    random_root_password: bool = False  # MARIADB_RANDOM_ROOT_PASSWORD: made at first boot
    skip_tzinfo: bool = False  # MARIADB_INITDB_SKIP_TZINFO: no time-zone tables at first boot
    warnings: tuple[str, ...] = ()  # the official image's variables we do not support
    conf_dirs: tuple[Path, ...] = ()  # MYSQL_CONF_DIRS: the user's *.cnf files
    mysqld_args: tuple[str, ...] = ()  # options after the image name (`run -- --opt`)
    initdb_dir: Path = Path("/docker-entrypoint-initdb.d")
    hooks_dir: Path = Path("/etc/autopilot-mysql/hooks.d")
    hook_timeout: float = 30.0
    hook_health_interval: float = 5.0
    consul_join: tuple[str, ...] = ()  # CONSUL_AGENT: the servers it joins (CONSUL's hosts)
    consul_scheme: str = "http"  # https: CONSUL=https://... or CONSUL_HTTP_SSL=true
    consul_token: str = ""  # CONSUL_HTTP_TOKEN: the ACL token on every call
    consul_ca: str = ""  # CONSUL_CACERT: the CA that signed Consul's certificate
    consul_verify: bool = True  # CONSUL_HTTP_SSL_VERIFY
    consul_datacenter: str = ""  # CONSUL_DATACENTER ("": the agent's own)
    consul_encrypt: str = ""  # CONSUL_ENCRYPT: the local agent's gossip key
    nofailover: bool = False  # never elected (tags, as Patroni's)
    noloadbalance: bool = False  # never in the read pool

    @property
    def tags(self) -> dict[str, str]:
        """The node's tags, published in its service's meta as tag_<name>=true."""
        return {k: "true" for k, on in (("nofailover", self.nofailover),
                                        ("noloadbalance", self.noloadbalance)) if on}

    @property
    def cluster(self) -> ClusterSettings:
        """This node's environment's values of the shared settings (the seed)."""
        return ClusterSettings(self.loop_wait, self.session_ttl, self.semi_sync_timeout,
                               self.failsafe)

    @property
    def socket(self) -> Path:
        return self.rundir / "mysqld.sock"

    def consul_client(self) -> dict[str, Any]:
        """How this node speaks to Consul (dcs.Consul's keywords): its local agent on loopback
        over http when it runs one, else CONSUL as given; the token and datacenter alike."""
        host, port = self.consul_endpoint
        local = self.consul_agent
        return {"host": host, "port": port, "scheme": "http" if local else self.consul_scheme,
                "token": self.consul_token, "dc": self.consul_datacenter or None,
                "verify": (self.consul_ca or self.consul_verify) if not local else True}

    @property
    def consul_servers(self) -> list[str]:
        """The Consul servers a local agent joins (CONSUL's hosts)."""
        return list(self.consul_join or (self.consul_host,))

    @property
    def consul_endpoint(self) -> tuple[str, int]:
        """Where this node talks to Consul: its local agent when it runs one."""
        return ("127.0.0.1", 8500) if self.consul_agent else (self.consul_host,
                                                              self.consul_port)

    @property
    def service_id(self) -> str:
        return f"{self.service_name}-{self.node_name}"

    def redacted(self) -> dict[str, object]:
        """For logs and /status: every setting but the secrets."""
        secret = {"root_password", "password", "repl_password", "api_token", "secret_key",
                  "consul_token", "consul_encrypt"}
        out = {k: ("<set>" if k in secret and v else str(v) if isinstance(v, Path) else v)
               for k, v in self.__dict__.items() if k != "snapshots"}
        if self.snapshots is not None:
            out["snapshots"] = {k: ("<set>" if k in secret and v else v)
                                for k, v in self.snapshots.__dict__.items()}
        return out


class _Reader:
    """Reads variables and collects problems instead of stopping at the first one."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def problem(self, var: str, what: str, example: str) -> None:
        self.problems.append(f"{var}: {what}. Example: {var}={example}")

    def raw(self, *names: str, secret: bool = False, example: str = "...") -> tuple[str, str]:
        """First set variable among `names` (aliases) -> (value, name). Each name may also be
        given as NAME_FILE, a file holding the value (`secret`: it is one, never shown)."""
        found: list[tuple[str, str]] = []
        for name in names:
            if name in self.env:
                found.append((self.env[name], name))
            if f"{name}_FILE" in self.env:  # every variable, as the official image reads them
                path = self.env[f"{name}_FILE"]
                try:
                    found.append((Path(path).read_text().rstrip("\r\n"), f"{name}_FILE"))
                except OSError as exc:
                    reason = exc.strerror or type(exc).__name__
                    self.problems.append(
                        f"{name}_FILE: cannot read {path!r} ({reason}); mount the secret file "
                        f"readable by root, or set {name} instead. Example: "
                        f"{name}_FILE=/run/secrets/{name.lower()}")
                    return "", f"{name}_FILE"
        if len({v for v, _ in found}) > 1:
            self.problems.append(f"{' and '.join(n for _, n in found)}: set to different "
                                 f"values; set only one of them. Example: {names[0]}={example}")
        return (found[0] if found else ("", names[0]))

    def text(self, name: str, *aliases: str, secret: bool = False, example: str = "...") -> str:
        value, _ = self.raw(name, *aliases, secret=secret, example=example)
        if not value:
            default = VARIABLES.get(name, (None, ""))[0]
            return default or ""
        return value

    def integer(self, name: str, lo: int, hi: int, example: str) -> int:
        value = self.text(name).strip()
        try:
            n = int(value)
        except ValueError:
            self.problem(name, f"{value!r} is not a whole number", example)
            return lo
        if not lo <= n <= hi:
            self.problem(name, f"{n} is out of range ({lo} to {hi})", example)
        return n

    def number(self, name: str, lo: float, hi: float, example: str) -> float:
        value = self.text(name).strip()
        try:
            n = float(value)
        except ValueError:
            self.problem(name, f"{value!r} is not a number of seconds", example)
            return lo
        if not lo <= n <= hi:
            self.problem(name, f"{n:g} is out of range ({lo:g} to {hi:g})", example)
        return n

    def boolean(self, name: str) -> bool:
        value = self.text(name).strip().lower()
        if value in _TRUE:
            return True
        if value not in _FALSE:
            self.problem(name, f"{value!r} is not true or false", "true")
        return False


def _parse_consul(r: _Reader) -> tuple[str, int, str, tuple[str, ...]]:
    """CONSUL as host[:port] or a URL: (host, port, scheme, every host). With a local agent
    it may name several servers, comma-separated: the agent joins them all (the first is
    the one named in messages); the supervisor itself speaks to its agent only."""
    hosts = [h.strip() for h in r.text("CONSUL").split(",")]
    if len(hosts) > 1:
        if r.text("CONSUL_AGENT").strip().lower() not in _TRUE:
            r.problem("CONSUL", "names several servers, which only a local agent can use: "
                      "set CONSUL_AGENT=true (it joins them all), or give one address (a "
                      "DNS name that resolves to a live server)", "consul:8500")
        for h in hosts[1:]:
            if not _valid_host(h.rpartition(":")[0] if ":" in h else h):
                r.problem("CONSUL", f"{h!r} is not a host name or IP address",
                          "consul-1,consul-2,consul-3")
    host, port, scheme = _parse_consul_one(r, hosts[0])
    join = tuple(h.rpartition(":")[0] if ":" in h and "://" not in h else h
                 for h in [host, *hosts[1:]])
    return host, port, scheme, join


def _parse_consul_one(r: _Reader, value: str) -> tuple[str, int, str]:
    """One CONSUL address as host[:port] or a URL: (host, port, scheme)."""
    scheme = "https" if r.text("CONSUL_HTTP_SSL").strip().lower() in _TRUE else "http"
    if "://" in value:
        scheme, _, value = value.partition("://")
        value = value.rstrip("/")
        if scheme not in ("http", "https"):
            r.problem("CONSUL", f"scheme {scheme!r} is not http or https", "https://consul:8501")
    default_port = "8501" if scheme == "https" else "8500"
    host, sep, port_text = value.rpartition(":") if ":" in value else (value, "", default_port)
    port = int(default_port)
    if sep:
        try:
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            r.problem("CONSUL", f"port {port_text!r} in {value!r} is not a port number",
                      "consul:8500")
    if not _valid_host(host):
        r.problem("CONSUL", f"{host!r} is not a host name or IP address", "consul:8500")
    return host, port, scheme


def _parse_consul_access(r: _Reader) -> dict[str, Any]:
    """ACL token, TLS and datacenter, as Consul's own CLI reads them from the environment."""
    token, _ = r.raw("CONSUL_HTTP_TOKEN", secret=True, example="an-ACL-token-secret-id")
    ca = r.text("CONSUL_CACERT").strip()
    if ca and not Path(ca).is_file():
        r.problem("CONSUL_CACERT", f"{ca} is not a readable file", "/run/secrets/consul-ca.pem")
    verify_text = r.text("CONSUL_HTTP_SSL_VERIFY").strip().lower()
    if verify_text not in _TRUE + _FALSE:
        r.problem("CONSUL_HTTP_SSL_VERIFY", f"{verify_text!r} is not true or false", "true")
    dc = r.text("CONSUL_DATACENTER").strip()
    if dc and not _LABEL.match(dc):
        r.problem("CONSUL_DATACENTER", f"{dc!r} is not a datacenter name", "dc1")
    encrypt, _ = r.raw("CONSUL_ENCRYPT", secret=True, example="(consul keygen)")
    if encrypt:
        try:
            if len(base64.b64decode(encrypt, validate=True)) not in (16, 24, 32):
                raise ValueError
        except ValueError:
            r.problem("CONSUL_ENCRYPT", "is not a gossip key (base64 of 32 bytes, as "
                      "`consul keygen` prints)", "(consul keygen)")
    return {"consul_token": token, "consul_ca": ca, "consul_verify": verify_text not in _FALSE,
            "consul_datacenter": dc, "consul_encrypt": encrypt}


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOST.match(host))


# The official image's variables that mean nothing here, and why (never silently ignored).
UNSUPPORTED = {
    "ALLOW_EMPTY_ROOT_PASSWORD": "root always has a password here",
    "ALLOW_EMPTY_PASSWORD": "root always has a password here",
    "ROOT_PASSWORD_HASH": "give the password itself (MARIADB_ROOT_PASSWORD or its _FILE)",
    "PASSWORD_HASH": "give the password itself (MARIADB_PASSWORD or its _FILE)",
    "REPLICATION_PASSWORD_HASH": "give the password itself (MARIADB_REPLICATION_PASSWORD)",
    "MASTER_HOST": "replication is set up by the supervisor, towards the elected primary",
    "MASTER_PORT": "replication is set up by the supervisor, towards the elected primary",
    "MYSQL_LOCALHOST_USER": "the health check is the supervisor's (autopilot-mysql health)",
    "MYSQL_LOCALHOST_GRANTS": "the health check is the supervisor's (autopilot-mysql health)",
    "HEALTHCHECK_GRANTS": "the health check is the supervisor's (autopilot-mysql health)",
    "DISABLE_UPGRADE_BACKUP": "mariadb-upgrade runs without a backup here: take a snapshot "
                              "first (autopilot-mysql backup now)",
    "AUTO_UPGRADE": "mariadb-upgrade always runs after a version change here",
}


def unsupported_official(env: Mapping[str, str]) -> tuple[str, ...]:
    out = []
    for name, why in UNSUPPORTED.items():
        for var in (f"MARIADB_{name}", f"MYSQL_{name}"):
            if var in env or f"{var}_FILE" in env:
                out.append(f"{var} is the official image's, and is ignored here: {why}")
    return tuple(out)


def load_settings(env: Mapping[str, str]) -> Settings:
    """Validate every variable; raise one ConfigError listing every problem found."""
    r = _Reader(env)
    root_pw, _ = r.raw("MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD", secret=True,
                       example="a-long-random-secret")
    random_root = r.text("MARIADB_RANDOM_ROOT_PASSWORD", "MYSQL_RANDOM_ROOT_PASSWORD").strip()
    random_root_on = random_root.lower() not in ("", *_FALSE)
    if root_pw and random_root_on:
        r.problem("MARIADB_RANDOM_ROOT_PASSWORD", "is set together with "
                  "MARIADB_ROOT_PASSWORD; set only one", "yes")
    if not root_pw and not random_root_on and not any(
            p.startswith(("MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD")) for p in r.problems):
        r.problem("MARIADB_ROOT_PASSWORD", "is required (or MYSQL_ROOT_PASSWORD, or either "
                  "as _FILE, or MARIADB_RANDOM_ROOT_PASSWORD=yes)", "a-long-random-secret")
    root_host = r.text("MARIADB_ROOT_HOST", "MYSQL_ROOT_HOST").strip() or "%"
    if not re.match(r"^[A-Za-z0-9._%:/-]{1,255}$", root_host):
        r.problem("MARIADB_ROOT_HOST", f"{root_host!r} is not a host pattern", "10.0.0.%")
    database = r.text("MARIADB_DATABASE", "MYSQL_DATABASE")
    if database and not _NAME.match(database):
        r.problem("MARIADB_DATABASE", f"{database!r} is not a plain database name (letters, "
                  "digits, _ $ -, at most 64)", "app")
    user = r.text("MARIADB_USER", "MYSQL_USER")
    password, _ = r.raw("MARIADB_PASSWORD", "MYSQL_PASSWORD", secret=True, example="app-secret")
    if user and not _USER.match(user):
        r.problem("MARIADB_USER", f"{user!r} is not a plain user name", "app")
    if user == "root":
        r.problem("MARIADB_USER", "'root' exists already; name the application user", "app")
    if user and not password:
        r.problem("MARIADB_PASSWORD", f"is required when MARIADB_USER ({user}) is set",
                  "app-secret")
    if password and not user:
        r.problem("MARIADB_USER", "is required when MARIADB_PASSWORD is set", "app")
    repl_user = r.text("MYSQL_REPL_USER", "MARIADB_REPLICATION_USER")
    if not _USER.match(repl_user):
        r.problem("MYSQL_REPL_USER", f"{repl_user!r} is not a plain user name", "repl")
    repl_pw, _ = r.raw("MYSQL_REPL_PASSWORD", "MARIADB_REPLICATION_PASSWORD", secret=True,
                       example="repl-secret")
    if not repl_pw and not any(p.startswith(("MYSQL_REPL_PASSWORD",
                                             "MARIADB_REPLICATION_PASSWORD"))
                               for p in r.problems):
        r.problem("MYSQL_REPL_PASSWORD", "is required (the same on every node; or "
                  "MARIADB_REPLICATION_PASSWORD)", "repl-secret")
    consul_host, consul_port, consul_scheme, consul_join = _parse_consul(r)
    access = _parse_consul_access(r)
    consul_agent = r.boolean("CONSUL_AGENT")
    service = r.text("SERVICE_NAME")
    if not _LABEL.match(service):
        r.problem("SERVICE_NAME", f"{service!r} is not a DNS label (a-z, 0-9, -)", "mysql")
    node = r.text("NODE_NAME") or socket.gethostname()
    if not _HOST.match(node):
        r.problem("NODE_NAME", f"{node!r} is not a host name", "db1")
    advertise = r.text("ADVERTISE_ADDRESS")
    if advertise:
        try:
            ipaddress.ip_address(advertise)
        except ValueError:
            r.problem("ADVERTISE_ADDRESS", f"{advertise!r} is not an IP address", "10.0.0.5")
    health_port = r.integer("HEALTH_PORT", 1, 65535, "9200")
    api_token, _ = r.raw("API_TOKEN", secret=True, example="a-long-random-token")
    if api_token and len(api_token) < 16:
        r.problem("API_TOKEN", "is shorter than 16 characters", "a-long-random-token-0123")
    if health_port == 3306:
        r.problem("HEALTH_PORT", "3306 is MariaDB's own port", "9200")
    level = r.text("LOG_LEVEL").upper()
    if level not in LOG_LEVELS:
        r.problem("LOG_LEVEL", f"{level!r} is not one of {', '.join(LOG_LEVELS)}", "INFO")
        level = "INFO"
    fmt = r.text("LOG_FORMAT").lower()
    if fmt not in ("text", "json"):
        r.problem("LOG_FORMAT", f"{fmt!r} is not text or json", "json")
        fmt = "text"
    pool_text = r.text("INNODB_BUFFER_POOL_SIZE").strip()
    pool: int | None = None
    if pool_text:
        try:
            pool = parse_size(pool_text)
            if pool < 8 << 20:
                r.problem("INNODB_BUFFER_POOL_SIZE", f"{pool_text} is below MariaDB's minimum "
                          "of 8M", "512M")
        except ValueError:
            r.problem("INNODB_BUFFER_POOL_SIZE", f"{pool_text!r} is not a size", "512M")
    stop_timeout = r.number("STOP_TIMEOUT", 1, 3600, "30")
    conf_dirs = tuple(Path(p) for p in r.text("MYSQL_CONF_DIRS").split(":") if p.strip())
    for d in conf_dirs:
        if not d.is_absolute():
            r.problem("MYSQL_CONF_DIRS", f"{str(d)!r} is not an absolute path",
                      "/etc/mysql/conf.d")
    initdb_dir = Path(r.text("INITDB_DIR"))
    hooks_dir = Path(r.text("HOOKS_DIR"))
    if not hooks_dir.is_absolute():
        r.problem("HOOKS_DIR", f"{str(hooks_dir)!r} is not an absolute path",
                  "/etc/autopilot-mysql/hooks.d")
    hook_timeout = r.number("HOOK_TIMEOUT", 1, 3600, "30")
    hook_health_interval = r.number("HOOK_HEALTH_INTERVAL", 1, 3600, "5")
    cs = _cluster(r)
    ttl, loop_wait, semi_sync_timeout, failsafe = (cs.session_ttl, cs.loop_wait,
                                                   cs.semi_sync_timeout, cs.failsafe)
    max_lag = r.integer("REPLICA_MAX_LAG", 0, 86400, "10")
    reprovision_text = r.text("REPROVISION", "SNAPSHOT_REPROVISION").strip().lower()
    if reprovision_text not in _TRUE + _FALSE:
        r.problem("REPROVISION", f"{reprovision_text!r} is not true or false", "true")
    reprovision = reprovision_text in _TRUE or reprovision_text == ""
    disk_text = r.text("DISK_MIN_FREE").strip()
    try:
        disk_min_free = parse_size(disk_text)
    except ValueError:
        r.problem("DISK_MIN_FREE", f"{disk_text!r} is not a size", "256M")
        disk_min_free = 256 << 20
    max_restarts = r.integer("MYSQLD_MAX_RESTARTS", 0, 1000, "5")
    window = r.number("MYSQLD_RESTART_WINDOW", 1, 86400, "300")
    datadir = Path(r.text("MYSQL_DATADIR"))
    rundir = Path(r.text("MYSQL_RUNDIR"))
    for var, path in (("MYSQL_DATADIR", datadir), ("MYSQL_RUNDIR", rundir)):
        if not path.is_absolute():
            r.problem(var, f"{str(path)!r} is not an absolute path", str(VARIABLES[var][0]))
    if len(str(rundir / "mysqld.sock")) > 100:
        r.problem("MYSQL_RUNDIR", "is too long for a unix socket path (at most ~90 chars)",
                  "/run/mysqld")
    snapshots = _parse_snapshots(r, service)
    nofailover = r.boolean("NOFAILOVER")
    noloadbalance = r.boolean("NOLOADBALANCE")
    topology = r.text("TOPOLOGY").strip().lower()
    if topology not in TOPOLOGIES:
        r.problem("TOPOLOGY", f"{topology!r} is not one of {', '.join(TOPOLOGIES)}", "galera")
    if r.problems:
        raise ConfigError(r.problems)
    return Settings(
        root_password=root_pw, root_host=root_host, random_root_password=random_root_on,
        skip_tzinfo=r.text("MARIADB_INITDB_SKIP_TZINFO", "MYSQL_INITDB_SKIP_TZINFO").strip()
        .lower() not in ("", *_FALSE), warnings=unsupported_official(env),
        database=database, user=user, password=password,
        repl_user=repl_user, repl_password=repl_pw, consul_host=consul_host,
        consul_port=consul_port, consul_agent=consul_agent, consul_join=consul_join,
        service_name=service,
        node_name=node, advertise_address=advertise, health_port=health_port,
        api_token=api_token,
        log_level=level, log_format=fmt, buffer_pool_size=pool, stop_timeout=stop_timeout,
        session_ttl=ttl, loop_wait=loop_wait, semi_sync_timeout=semi_sync_timeout,
        failsafe=failsafe,
        replica_max_lag=max_lag, disk_min_free=disk_min_free, reprovision=reprovision,
        mysqld_max_restarts=max_restarts,
        mysqld_restart_window=window, datadir=datadir, rundir=rundir, snapshots=snapshots,
        topology=topology, nofailover=nofailover, noloadbalance=noloadbalance,
        conf_dirs=conf_dirs, initdb_dir=initdb_dir, hooks_dir=hooks_dir,
        hook_timeout=hook_timeout,
        hook_health_interval=hook_health_interval, consul_scheme=consul_scheme, **access)


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _parse_snapshots(r: _Reader, service: str) -> SnapshotSettings | None:
    bucket = r.text("S3_BUCKET").strip()
    # The AWS SDKs' own variables, for who has them set already (S3_* win when both are)
    endpoint = (r.text("S3_ENDPOINT") or r.env.get("AWS_ENDPOINT_URL_S3", "")
                or r.env.get("AWS_ENDPOINT_URL", "")).strip()
    region = (r.text("S3_REGION") or r.env.get("AWS_REGION", "")
              or r.env.get("AWS_DEFAULT_REGION", "") or "us-east-1").strip()
    if not bucket:
        if endpoint:
            r.problem("S3_BUCKET", "is required when S3_ENDPOINT is set (snapshots need a "
                      "bucket)", "mysql-snapshots")
        return None
    if not _BUCKET.match(bucket) or ".." in bucket:
        r.problem("S3_BUCKET", f"{bucket!r} is not a valid bucket name (3-63 characters: "
                  "a-z, 0-9, dot, hyphen)", "mysql-snapshots")
    if endpoint and not re.match(r"^https?://[^/\s]+/?$", endpoint):
        r.problem("S3_ENDPOINT", f"{endpoint!r} is not an http(s) URL of a server (no path)",
                  "http://minio:9000")
    prefix = r.text("S3_PREFIX").strip().strip("/") or service
    if not re.match(r"^[A-Za-z0-9._/-]{1,200}$", prefix):
        r.problem("S3_PREFIX", f"{prefix!r} has characters other than letters, digits, "
                  ". _ - /", "prod/mysql")
    access, _ = r.raw("AWS_ACCESS_KEY_ID", secret=True, example="AKIA...")
    secret, _ = r.raw("AWS_SECRET_ACCESS_KEY", secret=True, example="a-secret-key")
    if bool(access) != bool(secret):
        r.problem("AWS_SECRET_ACCESS_KEY" if access else "AWS_ACCESS_KEY_ID",
                  "is required when the other S3 key is set", "...")
    verify_text = r.text("S3_VERIFY_TLS").strip()
    verify: bool | str
    if verify_text.lower() in _TRUE:
        verify = True
    elif verify_text.lower() in _FALSE:
        verify = False
    elif Path(verify_text).is_file():
        verify = verify_text
    else:
        r.problem("S3_VERIFY_TLS", f"{verify_text!r} is neither true/false nor a readable CA "
                  "bundle file", "/etc/ssl/certs/ca-certificates.crt")
        verify = True
    keep_days = r.number("SNAPSHOT_KEEP_DAYS", 0, 36500, "7")
    style = r.text("S3_ADDRESSING_STYLE").strip().lower()
    if style and style not in ("path", "virtual", "auto"):
        r.problem("S3_ADDRESSING_STYLE", f"{style!r} is not path, virtual or auto", "path")
    if not style:
        # AWS: virtual-hosted, as AWS wants it (path style is deprecated there), unless a
        # dotted bucket name would not match the wildcard certificate; others: path style,
        # which every S3-compatible store serves without DNS set-up.
        style = "path" if endpoint or "." in bucket else "virtual"
    return SnapshotSettings(
        bucket=bucket, endpoint=endpoint, prefix=prefix, region=region, addressing_style=style,
        create_bucket=r.boolean("S3_CREATE_BUCKET"),
        access_key=access, secret_key=secret, verify_tls=verify,
        timeout=r.number("S3_TIMEOUT", 1, 3600, "30"),
        interval=r.number("SNAPSHOT_INTERVAL", 0, 365 * 86400, "86400"),
        binlog_rotations=r.integer("SNAPSHOT_BINLOG_ROTATIONS", 0, 100000, "4"),
        keep=r.integer("SNAPSHOT_KEEP", 1, 10000, "3"), keep_days=keep_days,
        compression_level=r.integer("SNAPSHOT_COMPRESSION_LEVEL", 1, 19, "3"),
        verify=r.boolean("SNAPSHOT_VERIFY"),
        archive_interval=r.number("BINLOG_ARCHIVE_INTERVAL", 0, 3600, "5"))
