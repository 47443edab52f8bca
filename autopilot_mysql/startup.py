"""onStart: everything that happens before mysqld is started, in order.

1. Directories exist and belong to mysql.
2. The data directory's state is known (empty, interrupted first boot, ours, adopted, unknown).
3. The node has a server_id: from its state file, or allocated once from Consul (retried with
   a clear log line while Consul is unreachable; a restart never needs Consul for this).
4. my.cnf is rendered from etc/my.cnf.template into MYSQL_RUNDIR.
5. First boot (or a redo of an interrupted one): install the system schema and create users.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .config import Settings
from .dcs import Consul, agent_config
from .events import EventBus
from .exceptions import ConfigError, DataDirError, DCSError
from .mysql import datadir as dd
from .mysql import osuser, usercnf, wsrep
from .mysql.cnf import GaleraCnf, buffer_pool_size, cgroup_memory_limit, render_cnf
from .mysql.server import LocalServer, create_users_sql, run_statements
from .process import ManagedProcess, RestartPolicy
from .utils import Clock

log = logging.getLogger(__name__)


def advertise_address(settings: Settings) -> str:
    """The address other nodes and Consul's check use to reach this node."""
    if settings.advertise_address:
        return settings.advertise_address
    try:
        addr = socket.gethostbyname(socket.gethostname())
    except OSError as exc:
        raise ConfigError([f"ADVERTISE_ADDRESS: not set, and this host's name "
                           f"{socket.gethostname()!r} does not resolve ({exc}). Example: "
                           "ADVERTISE_ADDRESS=10.0.0.5"]) from exc
    if addr.startswith("127."):
        raise ConfigError([f"ADVERTISE_ADDRESS: not set, and this host's name resolves to "
                           f"the loopback address {addr}, which other nodes cannot reach. "
                           "Example: ADVERTISE_ADDRESS=10.0.0.5"])
    return addr


def start_consul_agent(settings: Settings, address: str, bus: EventBus,
                       clock: Clock) -> ManagedProcess:
    """CONSUL_AGENT: a local Consul client agent that joins CONSUL, as a managed child."""
    consul_bin = shutil.which("consul")
    if not consul_bin:
        raise DCSError("CONSUL_AGENT is set but no `consul` binary is on PATH; install "
                       "it in the image or unset CONSUL_AGENT")
    adir = settings.rundir / "consul"
    (adir / "data").mkdir(parents=True, exist_ok=True)
    cfg = adir / "agent.json"
    cfg.write_text(json.dumps(agent_config(
        node_name=settings.node_name, bind=address, join=settings.consul_servers,
        data_dir=str(adir / "data"), datacenter=settings.consul_datacenter,
        encrypt=settings.consul_encrypt, token=settings.consul_token,
        ca_file=settings.consul_ca), indent=1))
    cfg.chmod(0o600)  # it may hold the gossip key and the ACL token
    agent = ManagedProcess("consul-agent", [consul_bin, "agent", f"-config-file={cfg}"],
                           bus=bus, clock=clock,
                           policy=RestartPolicy(max_restarts=1000, window=60))
    agent.start()
    return agent


def stable_node_name(settings: Settings, given: bool, record: bool = True) -> Settings:
    """NODE_NAME that survives the container: a recreated container gets a new hostname, but
    its volume, and so its name, stays. Unset, the name recorded in the data directory at
    the first boot wins over the hostname; set (`given`), it is recorded, and a change from
    the recorded one is said (the old name's member record in Consul stays: delete it with
    `consul kv delete service/<SERVICE_NAME>/members/<old name>`). `record`: False for the
    admin commands, which read the name and write nothing."""
    state = dd.read_node_state(settings.datadir)
    recorded = state.get("node_name")
    name = settings.node_name
    if isinstance(recorded, str) and recorded:
        if not given:
            name = recorded
            if recorded != settings.node_name and record:
                log.info("NODE_NAME is %s, as recorded in the data directory at its first "
                         "boot (this container's hostname is %s)", recorded,
                         settings.node_name)
        elif recorded != name and record:
            log.warning("NODE_NAME is %s, but this data directory belonged to %s: the node "
                        "is renamed. Consul still holds a member record of %s; delete it "
                        "(consul kv delete service/%s/members/%s) once %s is gone for good",
                        name, recorded, recorded, settings.service_name, recorded, recorded)
    if recorded != name and record:
        dd.write_node_state(settings.datadir, {**state, "node_name": name})
    return replace(settings, node_name=name)


def prepare_dirs(settings: Settings) -> None:
    osuser.check()
    for d in (settings.datadir, settings.rundir):
        d.mkdir(parents=True, exist_ok=True)
        osuser.give(d)


EARLY_RETRY = 0.25  # seconds between the first tries for a server_id (the agent starting)
EARLY_TRIES = 20


def ensure_server_id(settings: Settings, consul: Consul, *, retry_every: float,
                     stop_requested: Callable[[], bool], sleep: Callable[[float], None]) -> int:
    state = dd.read_node_state(settings.datadir)
    sid = state.get("server_id")
    if isinstance(sid, int) and sid > 0:
        return sid
    attempt = 0
    while True:
        attempt += 1
        try:
            sid = consul.next_server_id()
            break
        except DCSError as exc:
            if stop_requested():
                raise
            # A local agent started a moment ago answers within a second or two: asked
            # often and quietly at first, then said (every 10th time) and asked less often.
            early = attempt <= EARLY_TRIES
            if attempt == EARLY_TRIES + 1 or (not early and attempt % 10 == 0):
                log.warning("cannot get a server_id yet: %s. This node needs Consul once, at "
                            "its first boot; retrying every %.0fs. Check CONSUL=%s and that "
                            "the Consul servers are up.", exc, retry_every, consul.address)
            elif early:
                log.debug("no server_id yet (Consul starting?): %s", exc)
            sleep(EARLY_RETRY if early else retry_every)
    dd.write_node_state(settings.datadir, {**state, "server_id": sid,
                                           "node": settings.node_name})
    log.info("allocated server_id %d from Consul (kept in %s)", sid,
             settings.datadir / dd.STATE)
    return sid


def renew_server_id(settings: Settings, consul: Consul, why: str) -> int:
    """A fresh cluster-unique server_id for this node (one try; raises DCSError). A replica
    skips events that carry its own server_id, so a node whose own past transactions must
    come back to it (its recovery truncated them, or it was rebuilt) takes a new one."""
    old = dd.read_node_state(settings.datadir)
    sid = consul.next_server_id()
    dd.write_node_state(settings.datadir, {**old, "server_id": sid,
                                           "node": settings.node_name})
    log.warning("server_id %s -> %d (kept in %s): %s", old.get("server_id"), sid,
                settings.datadir / dd.STATE, why)
    return sid


def check_user_settings(settings: Settings, say: bool = True) -> None:
    """The user's conf.d files and command-line options for mariadbd, checked before
    anything is touched: ConfigError naming every setting the supervisor owns."""
    try:
        found = usercnf.read_dirs(settings.conf_dirs) + usercnf.from_args(settings.mysqld_args)
    except usercnf.UserConfigError as exc:
        raise ConfigError([str(exc)]) from exc
    problems = usercnf.check(found)
    if problems:
        raise ConfigError(problems)
    if found and say:
        log.info("your own MariaDB settings: %s", ", ".join(
            f"{s.name}{'=' + s.value if s.value else ''} ({s.where})" for s in found))


def user_includes(settings: Settings) -> str:
    """The user's conf.d directories, included last so that their settings win (checked
    again: a file may have changed since the start)."""
    check_user_settings(settings, say=False)
    dirs = [d for d in settings.conf_dirs if d.is_dir()]
    return ("\n# Your own settings (MYSQL_CONF_DIRS), read last: they win over the above.\n"
            + "".join(f"!includedir {d}\n" for d in dirs)) if dirs else ""


def write_cnf(settings: Settings, server_id: int, address: str = "") -> Path:
    pool, reason = buffer_pool_size(settings.buffer_pool_size, cgroup_memory_limit())
    cnf = settings.rundir / "my.cnf"
    galera = GaleraCnf(settings.service_name, address or advertise_address(settings)) \
        if settings.topology == "galera" else None
    text = render_cnf(datadir=settings.datadir, rundir=settings.rundir, server_id=server_id,
                      report_host=settings.node_name, pool_size=pool, pool_reason=reason,
                      galera=galera) + user_includes(settings)
    tmp = cnf.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(cnf)
    log.info("rendered %s: server_id=%d, innodb_buffer_pool_size from %s", cnf, server_id,
             reason)
    return cnf


def server_release() -> str:
    """The installed mariadbd's release ('10.11.19'), '' when it cannot say."""
    try:
        out = subprocess.run(["mariadbd", "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    m = re.search(r"Ver (\d+\.\d+\.\d+)", out)
    return m.group(1) if m else ""


def _backup_release(datadir: Path) -> str:
    """The release of the server a backup in `datadir` was taken from ('' when none)."""
    try:
        text = (datadir / "xtrabackup_info").read_text(errors="replace")
    except OSError:
        return ""
    m = re.search(r"^server_version\s*=\s*(\d+\.\d+\.\d+)", text, re.M)
    return m.group(1) if m else ""


def _release(version: str) -> str:
    """'10.11.14-MariaDB-0+deb12u2-log' -> '10.11.14'."""
    return version.split("-", 1)[0]


def upgrade_if_needed(settings: Settings, version: str) -> threading.Thread | None:
    """mariadb-upgrade after the server's release changed (an image upgrade on an old
    volume), as the official image's MARIADB_AUTO_UPGRADE does, on a thread of its own: the
    node serves meanwhile. The release is recorded in the data directory when it is
    initialized and after each upgrade; nothing runs while it is unchanged. Data this node
    did not initialize (a snapshot, a copy, a state transfer: a rebuild forgets the record)
    is its source's release, which mariabackup wrote in xtrabackup_info. Not written to the
    binary log: every node upgrades its own system tables."""
    state = dd.read_node_state(settings.datadir)
    recorded = state.get("mariadb_version")
    now = _release(version)
    if not isinstance(recorded, str):
        recorded = _backup_release(settings.datadir) or now
        dd.write_node_state(settings.datadir, {**state, "mariadb_version": recorded})
    if recorded == now:
        return None

    def run() -> None:
        log.warning("MariaDB %s runs on data last served by %s: running mariadb-upgrade (the "
                    "node serves meanwhile)", now, recorded)
        t0 = time.monotonic()
        proc = subprocess.run(["mariadb-upgrade", "--protocol=socket",
                               f"--socket={settings.socket}", f"-u{osuser.admin_user()}",
                               "--silent"],
                              capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            log.error("mariadb-upgrade failed (exit %d): %s. The node keeps serving; run it "
                      "by hand inside the container (mariadb-upgrade -u%s)", proc.returncode,
                      (proc.stderr or proc.stdout).strip()[-500:], osuser.admin_user())
            return
        fresh = dd.read_node_state(settings.datadir)
        dd.write_node_state(settings.datadir, {**fresh, "mariadb_version": now})
        log.info("mariadb-upgrade from %s to %s done in %.0fs", recorded, now,
                 time.monotonic() - t0)

    t = threading.Thread(target=run, name="mariadb-upgrade", daemon=True)
    t.start()
    return t


def load_time_zones(socket: Path) -> None:
    """The time-zone tables from the system's zoneinfo (as the official image loads them at
    initialization; MARIADB_INITDB_SKIP_TZINFO skips it), never into the binary log."""
    t0 = time.monotonic()
    tz = subprocess.Popen(["mariadb-tzinfo-to-sql", "/usr/share/zoneinfo"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    load = subprocess.run(["mariadb", "--protocol=socket", f"--socket={socket}",
                           f"-u{osuser.admin_user()}",
                           "--init-command=SET SESSION sql_log_bin=0", "mysql"],
                          stdin=tz.stdout, capture_output=True, text=True, timeout=300)
    if tz.stdout is not None:
        tz.stdout.close()
    tz.wait()
    if load.returncode != 0 or tz.returncode != 0:
        raise DataDirError(f"loading the time-zone tables failed: "
                           f"{(load.stderr or '').strip()[-300:]} (set "
                           "MARIADB_INITDB_SKIP_TZINFO=yes to start without them)")
    log.info("time-zone tables loaded in %.1fs", time.monotonic() - t0)


def init_datadir_if_needed(settings: Settings, cnf: Path) -> dd.DataDirState:
    state = dd.inspect(settings.datadir)
    if state == dd.DataDirState.UNKNOWN:
        raise DataDirError(
            f"MYSQL_DATADIR={settings.datadir} holds files but no MariaDB system schema and "
            "no autopilot-mysql marker; refusing to initialize over them. Move the files "
            "away, or point MYSQL_DATADIR at an empty volume.")
    if state == dd.DataDirState.INTERRUPTED:
        log.warning("the first boot of %s was interrupted (found %s without %s): nothing "
                    "in it was ever served, so it is wiped and initialized again",
                    settings.datadir, dd.PENDING, dd.DONE)
        dd.wipe_interrupted(settings.datadir)
    if state in (dd.DataDirState.EMPTY, dd.DataDirState.INTERRUPTED):
        log.info("first boot: initializing %s", settings.datadir)
        server = LocalServer(settings.socket)
        root_password = settings.root_password or secrets.token_urlsafe(24)
        stmts = create_users_sql(
            root_password=root_password, database=settings.database,
            user=settings.user, password=settings.password, repl_user=settings.repl_user,
            repl_password=settings.repl_password, root_host=settings.root_host)
        if settings.topology == "galera" and osuser.is_root():
            # As the mysql user, mysql@localhost is the supervisor's own account (every
            # privilege): the SST runs as that same user, so a narrower account would
            # protect nothing.
            stmts += wsrep.sst_user_sql()

        def first_boot() -> None:
            run_statements(server, stmts)
            if not settings.skip_tzinfo:
                load_time_zones(settings.socket)

        dd.initialize(settings.datadir, cnf, settings.socket, first_boot)
        release = server_release()
        if release:  # this data is this release's: no mariadb-upgrade at its first start
            dd.write_node_state(settings.datadir, {**dd.read_node_state(settings.datadir),
                                                   "mariadb_version": release})
        if settings.random_root_password:
            # As the official image: once, at the first boot, and nowhere else.
            log.warning("GENERATED ROOT PASSWORD: %s (MARIADB_RANDOM_ROOT_PASSWORD: this "
                        "node's root@%s; printed this once, write it down)", root_password,
                        settings.root_host)
    elif state == dd.DataDirState.ADOPTED:
        log.warning("%s holds MariaDB data that autopilot-mysql did not create: using it as "
                    "it is (users are not created; the replication user must exist)",
                    settings.datadir)
    else:
        log.info("data directory %s is initialized: starting on it", settings.datadir)
    return state
