"""The supervisor as PID 1 of a test-bed host, against a real Consul and MariaDB.

Bound stated for issue 3: a node booted from nothing passes its Consul check within 30 s
(about 3-5 s measured on a 2-core machine: first boot ~2 s, then one check interval).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
import requests

from autopilot_mysql.dcs import Consul
from autopilot_mysql.election import Published, SyncState
from autopilot_mysql.exceptions import DCSError
from tests.testbed.bed import TestBed
from tests.testbed.cluster import APP_DB, Node, make_node
from tests.testbed.components import ConsulAgent, start_consul
from tests.testbed.host import Host
from tests.testbed.util import pid_running, wait_until

pytestmark = pytest.mark.integration
BOOT_BOUND = 30.0


@pytest.fixture
def consul(bed: TestBed) -> Iterator[ConsulAgent]:
    host = bed.add_host("consul")
    host.boot()
    yield start_consul(host)


def consul_checks(consul: ConsulAgent, service: str = "mysql") -> dict[str, str]:
    r = requests.get(f"http://{consul.address}/v1/health/checks/{service}", timeout=3)
    r.raise_for_status()
    return {c["ServiceID"]: c["Status"] for c in r.json()}


def catalog(consul: ConsulAgent, service: str = "mysql") -> list[dict[str, object]]:
    r = requests.get(f"http://{consul.address}/v1/catalog/service/{service}", timeout=3)
    r.raise_for_status()
    return list(r.json())


def boot(bed: TestBed, consul: ConsulAgent, name: str = "db1", **env: str) -> Node:
    """A node with docker-compose.yml's environment (a local Consul agent joining `consul`)."""
    node = make_node(bed.add_host(name), **env)
    node.boot()
    return node


def write_row(node: Node, value: int) -> None:
    """As a client would: a primary that fenced itself because its lease lapsed (its loop
    was starved for a lease's length on a loaded machine: the watchdog logs what it was
    doing) opens again within a cycle once a heartbeat proves the lock."""
    deadline = time.monotonic() + 15
    while True:
        try:
            with node.app() as c, c.cursor() as cur:
                cur.execute("CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY) ENGINE=InnoDB")
                cur.execute("INSERT INTO t VALUES (%s)", (value,))
            return
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != 1290 or time.monotonic() > deadline:
                raise
            print(f"{node.name} is read-only for now (fenced?): writing again")
            time.sleep(0.5)


def rows(node: Node) -> list[int]:
    with node.app() as c, c.cursor() as cur:
        cur.execute("SELECT id FROM t ORDER BY id")
        return [r[0] for r in cur.fetchall()]


def test_boot_passes_consul_check_and_app_user_writes(bed: TestBed,
                                                      consul: ConsulAgent) -> None:
    t0 = time.monotonic()
    node = boot(bed, consul)
    wait_until(lambda: consul_checks(consul).get("mysql-db1") == "passing", timeout=BOOT_BOUND,
               what="db1's Consul check to pass")
    elapsed = time.monotonic() - t0
    node.wait_http("/primary", 200, timeout=BOOT_BOUND)
    write_row(node, 1)
    assert rows(node) == [1]
    st = node.status()
    assert st["role"] == "primary" and st["writable"] and st["server_id"] >= 1
    assert st["version"].startswith("10.11")
    assert [m["node"] for m in st["members"]] == ["db1"]
    entry = catalog(consul)[0]
    assert entry["Node"] == "db1"  # registered through its own local agent
    assert entry["ServiceTags"] == ["primary"] and entry["ServicePort"] == 3306
    meta = entry["ServiceMeta"]
    assert isinstance(meta, dict) and meta["server_id"] == str(st["server_id"])
    status_text = requests.get(node.url("/status"), timeout=2).text
    assert "secret" not in status_text  # no password of the test environment leaks
    # PID 1 is the shim alone (init.exec_lean): no site-packages, none of the package's
    # imports, for the container's whole life
    assert node.host.pid1 is not None
    argv = Path(f"/proc/{node.host.pid1}/cmdline").read_bytes().split(b"\0")
    assert b"-S" in argv and argv[-2].endswith(b"autopilot_mysql/init.py"), argv
    maps = Path(f"/proc/{node.host.pid1}/maps").read_text()
    assert "site-packages" not in maps and "_ssl" not in maps
    print(f"check passing {elapsed:.1f}s after boot")


def test_data_survives_restart_on_same_data_directory(bed: TestBed,
                                                      consul: ConsulAgent) -> None:
    node = boot(bed, consul)
    node.wait_http("/primary", timeout=BOOT_BOUND)
    write_row(node, 42)
    server_id = node.status()["server_id"]
    node.host.restart()
    node.wait_http("/primary", timeout=BOOT_BOUND)
    assert rows(node) == [42]
    assert node.status()["server_id"] == server_id  # stable across restarts
    assert "first boot" not in node.log.read_text().split("starting as db1")[-1]


def test_sigterm_stops_cleanly_and_leaves_consul(bed: TestBed, consul: ConsulAgent) -> None:
    node = boot(bed, consul, STOP_TIMEOUT="15")
    node.wait_http("/primary", timeout=BOOT_BOUND)
    t0 = time.monotonic()
    code = node.host.stop(timeout=30)
    took = time.monotonic() - t0
    assert code == 0
    assert took < 15
    log = node.log.read_text()
    assert "Shutdown completed; log sequence number" in log  # InnoDB: a clean shutdown
    assert "mariadbd: Shutdown complete" in log
    assert catalog(consul) == []
    r = requests.get(f"http://{consul.address}/v1/kv/service/mysql/leader", timeout=3)
    assert r.status_code == 404  # the lock went with the session


def test_mysqld_killed_is_restarted_and_check_recovers(bed: TestBed,
                                                        consul: ConsulAgent) -> None:
    node = boot(bed, consul)
    node.wait_http("/primary", timeout=BOOT_BOUND)
    wait_until(lambda: consul_checks(consul).get("mysql-db1") == "passing", timeout=10,
               what="check passing")
    old = node.mysqld_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    # The endpoint Consul's check (and HAProxy) polls fails while mysqld is down. The restart
    # (0.5 s backoff, then mysqld's start) can fall between two of the check's 1 s polls, so
    # Consul itself need not see the outage: it is watched where it shows, at the source.
    wait_until(lambda: node.http("/health") == 503 and node.http("/primary") == 503,
               timeout=15, what="/health and /primary to fail after kill -9 of mysqld",
               interval=0.02)

    def restarted() -> int | None:
        pid = node.mysqld_pid()
        return pid if pid not in (None, old) else None

    new = wait_until(restarted, timeout=30, what="a new mysqld")
    node.wait_http("/primary", timeout=30)
    wait_until(lambda: consul_checks(consul).get("mysql-db1") == "passing", timeout=30,
               what="the Consul check to pass after the restart")
    assert node.mysqld_pid() == new
    text = node.log.read_text()
    assert "mysqld killed by SIGKILL" in text
    assert "giving up the leader lock and our election position: mysqld exited" in text


def test_mysqld_failing_repeatedly_stays_down_and_says_why(bed: TestBed,
                                                          consul: ConsulAgent) -> None:
    node = boot(bed, consul, MYSQLD_MAX_RESTARTS="1", MYSQLD_RESTART_WINDOW="600")
    node.wait_http("/primary", timeout=BOOT_BOUND)
    for _ in range(2):
        pid = wait_until(node.mysqld_pid, timeout=30, what="a running mysqld")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda p=pid: not pid_running(p), timeout=10, what="mysqld gone")
        time.sleep(0.2)  # let the supervisor see this exit before the next kill

    def failed() -> bool:
        return bool(node.status()["mysqld"] == "failed")

    wait_until(failed, timeout=30, what="mysqld to be marked failed")
    st = node.status()
    assert "stays down" in st["last_error"] and not st["healthy"]
    assert node.http("/health") == 503
    assert node.mysqld_pid() is None


def test_supervisor_killed_leaves_no_mysqld(bed: TestBed, consul: ConsulAgent) -> None:
    node = boot(bed, consul)
    node.wait_http("/primary", timeout=BOOT_BOUND)
    sup, mysqld = node.supervisor_pid(), node.mysqld_pid()
    assert sup is not None and mysqld is not None and sup != node.host.pid1
    os.kill(sup, signal.SIGKILL)
    code = node.host.wait(timeout=30)
    assert code != 0  # the container exits non-zero: its restart policy takes over
    assert not pid_running(mysqld)
    # (the init names pids as seen inside the host's PID namespace)
    text = node.log.read_text()
    clean = re.search(r"mariadbd \(\d+\) exited with status 0 \(a clean shutdown\)", text)
    assert clean
    # the agent (the node's session, so a primary's lock) outlives mysqld: no election while
    # mysqld still serves its clients, unfenced
    assert clean.start() < text.index("stopping consul (")
    # The proof of a clean InnoDB shutdown: the next start needs no crash recovery.
    before = node.log.stat().st_size
    node.host.restart()
    node.wait_healthy(BOOT_BOUND)
    after = node.log.read_bytes()[before:].decode()
    assert "InnoDB: Starting crash recovery" not in after
    assert "mariadbd: ready for connections" in after


def test_orphaned_grandchildren_are_reaped(bed: TestBed, consul: ConsulAgent) -> None:
    node = boot(bed, consul)
    node.wait_healthy(BOOT_BOUND)
    # Each sh exits at once, so its sleep is reparented to the host's PID 1, our init.
    for _ in range(5):
        node.host.exec(["sh", "-c", "(sleep 0.3 &) >/dev/null 2>&1"])

    def zombies() -> list[int]:
        out = []
        for pid in node.host.processes():
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] == "Z":
                    out.append(pid)
            except OSError:
                pass
        return out

    time.sleep(1.0)  # the sleeps end; give PID 1 a moment to reap them
    wait_until(lambda: not zombies(), timeout=10, what="no zombie left in the host")


BAD_INPUTS: list[tuple[dict[str, str | None], str]] = [
    # compose gives the secrets as files (*_FILE): a secret missing, or its file
    ({"MARIADB_ROOT_PASSWORD_FILE": None}, "MARIADB_ROOT_PASSWORD"),
    ({"MARIADB_ROOT_PASSWORD_FILE": "/nonexistent/pw"}, "MARIADB_ROOT_PASSWORD_FILE"),
    ({"CONSUL": "consul:eighty"}, "CONSUL"),
    ({"CONSUL": "http//bad host"}, "CONSUL"),
    ({"HEALTH_PORT": "nine-two-hundred"}, "HEALTH_PORT"),
    ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
    ({"LOG_FORMAT": "yaml"}, "LOG_FORMAT"),
    ({"INNODB_BUFFER_POOL_SIZE": "big"}, "INNODB_BUFFER_POOL_SIZE"),
    ({"MARIADB_PASSWORD_FILE": None}, "MARIADB_PASSWORD"),
    ({"MYSQL_REPL_PASSWORD_FILE": None}, "MYSQL_REPL_PASSWORD"),
    ({"STOP_TIMEOUT": "soon"}, "STOP_TIMEOUT"),
    ({"SERVICE_NAME": "My DB"}, "SERVICE_NAME"),
    ({"CONSUL_AGENT": "perhaps"}, "CONSUL_AGENT"),
]


def test_bad_inputs_exit_2_naming_the_variable_and_touch_nothing(
        bed: TestBed, consul: ConsulAgent) -> None:
    host = bed.add_host("db1")
    for overrides, var in BAD_INPUTS:
        node = make_node(host)
        for k, v in overrides.items():
            if v is None:
                node.env.pop(k, None)
            else:
                node.env[k] = v
        log_before = node.log.stat().st_size if node.log.exists() else 0
        node.boot()
        code = host.wait(timeout=20)
        out = node.log.read_bytes()[log_before:].decode()
        assert code == 2, (var, out)
        assert f"  - {var}:" in out and "Example:" in out, (var, out)
        assert "Traceback" not in out, out
        assert not node.datadir.exists(), var  # nothing was touched
    assert catalog(consul) == []


@pytest.mark.parametrize("marker", ["autopilot-init.pending", "mysql/db.opt",
                                    "aria_log_control"])
def test_first_boot_killed_halfway_comes_back_initialized(bed: TestBed, consul: ConsulAgent,
                                                          marker: str) -> None:
    """kill -9 of the whole host as soon as `marker` appears in the data directory."""
    node = boot(bed, consul)
    wait_until(lambda: (node.datadir / marker).exists(), timeout=30, interval=0.005,
               what=f"{marker} to appear during the first boot")
    node.host.kill()
    assert not (node.datadir / "autopilot-init.done").exists()
    node.host.restart()
    node.wait_http("/primary", timeout=BOOT_BOUND)
    write_row(node, 7)
    assert rows(node) == [7]
    assert (node.datadir / "autopilot-init.done").exists()
    assert not (node.datadir / "autopilot-init.pending").exists()
    with node.root() as c, c.cursor() as cur:
        cur.execute("SELECT user, host FROM mysql.user ORDER BY user, host")
        users = set(cur.fetchall())
    assert {("app", "%"), ("repl", "%"), ("root", "%"), ("root", "localhost")} <= users
    with node.app() as c, c.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == (APP_DB,)


def test_consul_unreachable_at_start_is_retried(bed: TestBed, consul: ConsulAgent) -> None:
    host: Host = bed.add_host("db1")
    bed.partition([host], [consul.host])
    node = make_node(host)
    node.boot()
    wait_until(lambda: "cannot get a server_id yet" in node.log.read_text(), timeout=30,
               what="a log line saying Consul is being retried")
    assert node.host.running and node.http("/liveness") == 200 and node.http("/health") == 503
    assert node.status()["state"] == "waiting for Consul"
    bed.heal()
    node.wait_http("/primary", timeout=BOOT_BOUND + 10)


def test_direct_consul_mode_without_local_agent(bed: TestBed, consul: ConsulAgent) -> None:
    node = boot(bed, consul, CONSUL_AGENT="false", CONSUL=f"consul:{consul.address.split(':')[1]}")
    node.wait_http("/primary", timeout=BOOT_BOUND)
    entry = catalog(consul)[0]
    assert entry["Node"] == "consul"  # registered on the server's agent, checked over the bed
    assert node.mysqld_pid() is not None
    assert not [p for p in node.host.processes()
                if Path(f"/proc/{p}/comm").read_text().strip() == "consul"]
    assert node.host.stop(timeout=30) == 0
    assert catalog(consul) == []


def test_local_agent_stops_last_and_leaves(bed: TestBed, consul: ConsulAgent) -> None:
    node = boot(bed, consul)
    node.wait_http("/primary", timeout=BOOT_BOUND)
    assert node.host.stop(timeout=40) == 0
    log = node.log.read_text()
    assert log.index("mysqld shut down cleanly") < log.index("stopping consul-agent")
    assert catalog(consul) == []
    r = requests.get(f"http://{consul.address}/v1/catalog/nodes", timeout=3)
    assert "db1" not in [n["Node"] for n in r.json()]  # the agent left the cluster


def test_stop_past_the_timeout_kills_mysqld_and_exits_non_zero(bed: TestBed,
                                                                consul: ConsulAgent) -> None:
    node = boot(bed, consul, STOP_TIMEOUT="4")
    node.wait_http("/primary", timeout=BOOT_BOUND)
    mysqld = node.mysqld_pid()
    assert mysqld is not None
    os.kill(mysqld, signal.SIGSTOP)  # a mysqld that cannot finish its shutdown
    t0 = time.monotonic()
    code = node.host.stop(timeout=30)
    assert code == 1 and time.monotonic() - t0 < 10
    assert not pid_running(mysqld)
    assert "mysqld was killed at the STOP_TIMEOUT" in node.log.read_text()


def test_forwarded_signals_and_member_changes_reach_the_loop(bed: TestBed,
                                                             consul: ConsulAgent) -> None:
    db1 = boot(bed, consul, "db1")
    db1.wait_http("/primary", timeout=BOOT_BOUND)
    assert db1.host.pid1 is not None
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        os.kill(db1.host.pid1, sig)  # to the init shim, which forwards to the supervisor
        wait_until(lambda s=sig: f"{s.name} received" in db1.log.read_text(), timeout=5,
                   what=f"{sig.name} to reach the supervisor")
    assert db1.host.running  # none of them stops it
    db2 = boot(bed, consul, "db2")
    # Consul's blocking query hands the change to db1's loop: /status lists db2 as soon as
    # Consul does (the check interval is the slow part, not the watch).
    wait_until(lambda: any(c["Node"] == "db2" for c in catalog(consul)), timeout=BOOT_BOUND,
               what="db2 in the catalog")
    t0 = time.monotonic()
    wait_until(lambda: "db2" in [m["node"] for m in db1.status()["members"]], timeout=5,
               what="db1's /status to list db2")
    print(f"member change visible in db1's /status {time.monotonic() - t0:.2f}s after Consul")
    db2.wait_healthy(BOOT_BOUND)


def test_an_election_position_left_by_an_earlier_run_of_the_node_is_replaced(
        consul: ConsulAgent) -> None:
    """Nemesis seed 157636295: a host restarted within its old session's TTL could not publish
    its position (the key was still held by the dead run's session), and the old position
    stayed visible to the election."""
    host, port = consul.address.rsplit(":", 1)
    dcs = Consul(host, int(port), "mysql")
    old = dcs.create_session(name="mysql-db3", ttl=30, service_id=None)
    dcs.publish_position(old, "db3", "0-5-4699", "d3", term=17)
    new = dcs.create_session(name="mysql-db3", ttl=30, service_id=None)
    dcs.publish_position(new, "db3", "0-6-5853", "d3", term=42)
    state = dcs.cluster_state(consistent=True)
    assert state.positions == {"db3": Published("db3", "0-6-5853", "d3", term=42)}
    _, item = consul.client().kv.get("service/mysql/positions/db3")
    assert item is not None and item["Session"] == new


def test_an_acknowledgement_set_write_answers_the_index_consul_gave_it(
        consul: ConsulAgent) -> None:
    """The primary's keeper writes the set again from the index its own write answered,
    without reading first (ackset.AckSetKeeper): that index is Consul's, and a write naming
    an older one is refused."""
    host, port = consul.address.rsplit(":", 1)
    dcs = Consul(host, int(port), "mysql")
    session = dcs.create_session(name="mysql-db1", ttl=30, service_id=None)
    assert dcs.acquire_leader(session, "db1", "10.0.0.1", "", 0)
    first = dcs.write_sync(session, SyncState("db1", "d1"))
    assert first is not None and first.index > 0
    assert dcs.cluster_state(consistent=True).sync == first
    second = dcs.write_sync(session, first.with_members({"db2": "d2"}))
    assert second is not None and second.index > first.index
    assert dcs.cluster_state(consistent=True).sync == second
    assert dcs.write_sync(session, first.with_members({"db3": "d3"})) is None, \
        "a write naming an index Consul moved past was applied"
    other = dcs.create_session(name="mysql-db2", ttl=30, service_id=None)
    assert dcs.write_sync(other, second) is None, "a session without the lock wrote the set"


def test_official_image_conventions_conf_d_and_command_line_options(
        bed: TestBed, consul: ConsulAgent) -> None:
    """A conf.d file and options after the image name reach mariadbd (the user's win over
    ours); a conf.d setting the supervisor owns is refused at start, naming file and line,
    before anything is touched."""
    host = bed.add_host("db1")
    node = make_node(host)
    conf = Path(node.env["MYSQL_CONF_DIRS"])
    conf.mkdir(parents=True)
    (conf / "my.cnf").write_text("[mysqld]\nmax_connections = 77\n"
                                 "innodb_buffer_pool_size = 64M\n")
    node.boot("--max-allowed-packet=33554432")
    node.wait_http("/primary", timeout=BOOT_BOUND)
    with node.root() as c, c.cursor() as cur:
        cur.execute("SELECT @@max_connections, @@max_allowed_packet, "
                    "@@innodb_buffer_pool_size, @@log_bin, @@gtid_strict_mode")
        assert cur.fetchone() == (77, 33554432, 64 << 20, 1, 1)
    assert "your own MariaDB settings: max_connections=77" in node.log.read_text()
    assert host.stop(timeout=30) == 0
    # A setting the supervisor owns: refused at start, the data untouched.
    (conf / "zz-bad.cnf").write_text("[mariadbd]\nread_only = OFF\n")
    log_before = node.log.stat().st_size
    node.boot()
    assert host.wait(timeout=30) == 2
    out = node.log.read_bytes()[log_before:].decode()
    assert f"{conf / 'zz-bad.cnf'}:2: read_only is set by autopilot-mysql" in out, out
    assert "Traceback" not in out
    (conf / "zz-bad.cnf").unlink()
    log_before = node.log.stat().st_size
    node.boot("--server-id=99")
    assert host.wait(timeout=30) == 2
    out = node.log.read_bytes()[log_before:].decode()
    assert "command line: server_id is set by autopilot-mysql" in out, out


def test_official_image_variables_root_host_random_password_tz_and_upgrade(
        bed: TestBed, consul: ConsulAgent) -> None:
    """MARIADB_RANDOM_ROOT_PASSWORD (printed once), MARIADB_ROOT_HOST=localhost (no remote
    root), time-zone tables loaded at initialization, an unsupported official variable named
    in a warning, and mariadb-upgrade run once the recorded release differs."""
    import json

    import pymysql
    node = boot(bed, consul, MARIADB_ROOT_PASSWORD_FILE=None,  # type: ignore[arg-type]
                MARIADB_RANDOM_ROOT_PASSWORD="yes",
                MARIADB_ROOT_HOST="localhost", MARIADB_MASTER_HOST="elsewhere")
    node.wait_http("/primary", timeout=BOOT_BOUND)
    text = node.log.read_text()
    m = re.search(r"GENERATED ROOT PASSWORD: (\S+)", text)
    assert m and text.count("GENERATED ROOT PASSWORD") == 1, text[-2000:]
    assert "MARIADB_MASTER_HOST is the official image's, and is ignored here" in text
    with node.root() as c, c.cursor() as cur:
        cur.execute("SELECT user, host FROM mysql.user WHERE user = 'root'")
        assert cur.fetchall() == (("root", "localhost"),)
        cur.execute("SELECT COUNT(*) FROM mysql.time_zone_name")
        assert cur.fetchone()[0] > 300
        cur.execute("SELECT CONVERT_TZ('2026-12-03 12:00:00', 'UTC', 'Europe/Paris')")
        assert str(cur.fetchone()[0]) == "2026-12-03 13:00:00"
    with pytest.raises(pymysql.MySQLError):  # no remote root, whatever the password
        pymysql.connect(host=node.host.ip, user="root", password=m.group(1), connect_timeout=3)
    # The image was upgraded under the volume: the recorded release differs.
    state_file = node.datadir / "autopilot.json"
    state = json.loads(state_file.read_text())
    assert re.match(r"^\d+\.\d+\.\d+$", state["mariadb_version"]), state
    assert node.host.stop(timeout=30) == 0
    state_file.write_text(json.dumps({**state, "mariadb_version": "10.6.0"}))
    node.boot()
    node.wait_http("/primary", timeout=BOOT_BOUND)
    wait_until(lambda: "mariadb-upgrade from 10.6.0 to" in node.log.read_text(), timeout=120,
               what="mariadb-upgrade to run and finish")
    assert json.loads(state_file.read_text())["mariadb_version"] == state["mariadb_version"]
    assert "GENERATED ROOT PASSWORD" not in node.log.read_text().split("starting as")[-1]


def test_the_consul_transport_against_a_real_agent(consul: ConsulAgent) -> None:
    """consul_http (a socket per thread, answers parsed by httptools) against a real agent:
    the connection is kept and reused; a large value comes back whole (Go sends it chunked);
    a blocking query answers after its wait with the index (a header); a refused
    transaction reads as one; an agent restarted under a kept connection costs nothing but a
    new connection."""
    host, port = consul.address.rsplit(":", 1)
    dcs = Consul(host, int(port), "mysql")
    http = dcs.client.http
    big = os.urandom(200_000).hex()  # 400 KB (the limit is 512): over any buffer Go sizes
    assert dcs.client.kv.put("transport/big", big)
    raw = requests.get(f"http://{consul.address}/v1/kv/transport/big", timeout=5)
    assert raw.headers.get("Transfer-Encoding") == "chunked", raw.headers  # the path we test
    index, item = dcs.client.kv.get("transport/big")
    assert item is not None and item["Value"].decode() == big
    kept = http.connection()._sock
    assert kept is not None and dcs.client.kv.get("transport/big")[1] is not None
    assert http.connection()._sock is kept, "the connection was not reused"
    assert dcs.client.kv.get("transport/missing")[1] is None  # a 404
    t0 = time.monotonic()
    again, _ = dcs.client.kv.get("transport/big", index=index, wait="1s")
    assert again == index and time.monotonic() - t0 >= 0.9
    session = dcs.create_session(name="mysql-db1", ttl=30, service_id=None)
    assert dcs.acquire_leader(session, "db1", "10.0.0.1", "", 0)
    other = dcs.create_session(name="mysql-db2", ttl=30, service_id=None)
    assert dcs.heartbeat(session, "db1", 1, 2.0) and not dcs.heartbeat(other, "db2", 1, 2.0)
    # The agent goes away under the kept connection, and comes back.
    consul.host.kill_spawned(consul.proc)
    with pytest.raises(DCSError):
        dcs.cluster_state()
    start_consul(consul.host)
    wait_until(lambda: dcs.client.kv.put("transport/back", "1"), timeout=60,
               what="the restarted agent to take a write through the transport")
    assert dcs.client.kv.get("transport/big")[1]["Value"].decode() == big
