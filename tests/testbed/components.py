"""Real components on test-bed hosts, and clients for them from the harness.

- MariaDB 10.11 from Debian's packages (a plain server, for tests of the bed itself; the product's
  hosts run `autopilot-mysql run` as PID 1, which starts its own mariadbd).
- Consul, built from its Go module by scripts/setup.sh: servers and client agents.
- MinIO, built the same way: a real S3-compatible server with its data on the host's disk.
- HAProxy from Debian's packages.

Each start_* function starts the component inside a booted host and waits until it serves.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import consul
import pymysql
import requests
from botocore.config import Config

from .host import Host
from .util import REPO, TestBedError, run, tool, wait_until

MYSQL_UID_NAME = "mysql"


# --- MariaDB -------------------------------------------------------------------------------------

@dataclass
class MariaDB:
    host: Host
    datadir: Path
    socket: Path
    proc: subprocess.Popen[bytes]
    defaults: Path

    def connect(self, *, tcp: bool = False, user: str = "root", password: str = "",
                database: str | None = None, timeout: float = 5) -> pymysql.Connection[Any]:
        """A connection to this server: over its unix socket (works across network namespaces)
        or over TCP from the harness through the bridge."""
        if tcp:
            return pymysql.connect(host=self.host.ip, port=3306, user=user, password=password,
                                   database=database, connect_timeout=timeout, autocommit=True)
        return pymysql.connect(unix_socket=str(self.socket), user=user, password=password,
                               database=database, connect_timeout=timeout, autocommit=True)


def start_mariadb(host: Host, *, server_id: int = 1, extra: Sequence[str] = ()) -> MariaDB:
    base = host.dir / "mysql"
    datadir, rundir = base / "data", base / "run"
    for d in (datadir, rundir):
        d.mkdir(parents=True, exist_ok=True)
        shutil.chown(d, MYSQL_UID_NAME, MYSQL_UID_NAME)
    socket = rundir / "mysqld.sock"
    cnf = base / "my.cnf"
    cnf.write_text("\n".join([
        "[mariadbd]", f"datadir={datadir}", f"socket={socket}", f"pid-file={rundir}/mysqld.pid",
        "user=mysql", "bind-address=0.0.0.0", "port=3306", f"server_id={server_id}",
        "log_bin=mysql-bin", "binlog_format=ROW", "skip-name-resolve",
        "innodb_buffer_pool_size=64M", "innodb_log_file_size=48M", *extra, ""]))
    if not (datadir / "mysql").exists():
        run(["mariadb-install-db", f"--defaults-file={cnf}", "--user=mysql",
             "--auth-root-authentication-method=socket", "--skip-test-db"], timeout=120)
    proc = host.spawn(["mariadbd", f"--defaults-file={cnf}"], log="mariadbd.log")
    db = MariaDB(host=host, datadir=datadir, socket=socket, proc=proc, defaults=cnf)
    wait_until(lambda: db.connect().ping() is None or True, timeout=30,
               what=f"mariadbd on {host.name} to answer on {socket}")
    return db


# --- Consul --------------------------------------------------------------------------------------

CONSUL_HTTP = 8500


@dataclass
class ConsulAgent:
    host: Host
    server: bool
    proc: subprocess.Popen[bytes]
    token: str = ""  # the management token when ACLs are on

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Consul-Token": self.token} if self.token else {}

    @property
    def address(self) -> str:
        return f"{self.host.ip}:{CONSUL_HTTP}"

    def client(self, timeout: float = 5) -> consul.Consul:
        return consul.Consul(host=self.host.ip, port=CONSUL_HTTP, connections_timeout=timeout)

    def serves(self) -> bool:
        """True once the agent answers a catalog read through the servers (RPC works) and lists
        itself in the catalog (its own registration is synced)."""
        r = requests.get(f"http://{self.address}/v1/catalog/nodes", timeout=3,
                         headers=self.headers)
        return r.ok and any(n["Node"] == self.host.name for n in r.json())

    def leader(self) -> str:
        r = requests.get(f"http://{self.address}/v1/status/leader", timeout=2,
                         headers=self.headers)
        r.raise_for_status()
        return str(r.json())


def consul_config(host: Host, *, server: bool, join: Sequence[str], bootstrap_expect: int = 1
                  ) -> dict[str, Any]:
    """Agent settings for a test-bed host. Timings are tuned for a LAN of namespaces."""
    cfg: dict[str, Any] = {
        "node_name": host.name,
        "datacenter": "dc1",
        "data_dir": str(host.dir / "consul" / "data"),
        "bind_addr": host.ip,
        "advertise_addr": host.ip,
        "client_addr": "0.0.0.0",
        "retry_join": list(join),
        "retry_interval": "1s",
        "disable_update_check": True,  # no traffic outside the bed
        "log_level": "INFO",
        "enable_script_checks": False,
        "leave_on_terminate": False,
        "ports": {"grpc": -1, "grpc_tls": -1},
        "ui_config": {"enabled": False},
        "performance": {"raft_multiplier": 1},
    }
    if server:
        cfg.update(server=True, bootstrap_expect=bootstrap_expect)
    return cfg


def start_consul(host: Host, *, server: bool = True, join: Sequence[str] = (),
                 bootstrap_expect: int = 1, wait_leader: bool = True,
                 extra: dict[str, Any] | None = None, token: str = "") -> ConsulAgent:
    """`extra`: more agent settings (ACLs, TLS, a gossip key); `token`: the management token
    the test bed's own reads carry when ACLs deny by default."""
    cdir = host.dir / "consul"
    (cdir / "data").mkdir(parents=True, exist_ok=True)
    cfg = cdir / "agent.json"
    cfg.write_text(json.dumps({**consul_config(host, server=server, join=join,
                                               bootstrap_expect=bootstrap_expect),
                               **(extra or {})}, indent=1))
    proc = host.spawn([tool("consul"), "agent", f"-config-file={cfg}"], log="consul.log")
    agent = ConsulAgent(host=host, server=server, proc=proc, token=token)

    def ready() -> bool:
        if proc.poll() is not None:
            raise TestBedError(f"consul on {host.name} exited {proc.returncode}: "
                               f"see {host.dir / 'consul.log'}")
        if not wait_leader:
            return requests.get(f"http://{agent.address}/v1/agent/self", timeout=2,
                                headers=agent.headers).ok
        return agent.serves()

    wait_until(ready, timeout=60, what=f"consul on {host.name} to "
               + ("serve reads through the servers" if wait_leader else "answer"))
    return agent


def start_consul_cluster(hosts: Sequence[Host]) -> list[ConsulAgent]:
    """One server per host (1 or 3 usually), all joined; returns once a leader is elected."""
    names = [h.ip for h in hosts]
    agents = [start_consul(h, server=True, join=[n for n in names if n != h.ip],
                           bootstrap_expect=len(hosts), wait_leader=False) for h in hosts]
    wait_until(lambda: all(a.leader() and a.serves() for a in agents), timeout=60,
               what=f"the {len(hosts)}-server consul cluster to elect a leader and serve")
    return agents


# --- MinIO (S3) ----------------------------------------------------------------------------------

S3_PORT = 9000


@dataclass
class S3Server:
    host: Host
    proc: subprocess.Popen[bytes]
    access_key: str = "apm-test-access"
    secret_key: str = "apm-test-secret-key"
    region: str = "us-east-1"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host.ip}:{S3_PORT}"

    def client(self) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                          connect_timeout=3, read_timeout=30))


def start_minio(host: Host, access_key: str | None = None, secret_key: str | None = None
                ) -> S3Server:
    data = host.dir / "minio"
    data.mkdir(parents=True, exist_ok=True)
    s3 = S3Server(host=host, proc=None)  # type: ignore[arg-type]
    s3.access_key = access_key or s3.access_key
    s3.secret_key = secret_key or s3.secret_key
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(host.dir),
           "MINIO_ROOT_USER": s3.access_key, "MINIO_ROOT_PASSWORD": s3.secret_key,
           "MINIO_BROWSER": "off", "MINIO_UPDATE": "off", "MINIO_CALLHOME_ENABLE": "off"}
    s3.proc = host.spawn([tool("minio"), "server", str(data), "--quiet",
                          "--address", f"{host.ip}:{S3_PORT}",
                          "--console-address", "127.0.0.1:9001"], env=env, log="minio.log")

    def ready() -> bool:
        if s3.proc.poll() is not None:
            raise TestBedError(f"minio on {host.name} exited {s3.proc.returncode}: "
                               f"see {host.dir / 'minio.log'}")
        return requests.get(f"{s3.endpoint}/minio/health/live", timeout=2).ok

    wait_until(ready, timeout=60, what=f"minio on {host.name} to answer")
    return s3


# --- HAProxy -------------------------------------------------------------------------------------

@dataclass
class HAProxy:
    host: Host
    proc: subprocess.Popen[bytes]
    config: Path
    ports: list[int] = field(default_factory=list)


def start_haproxy(host: Host, config_text: str, ports: Sequence[int],
                  env: dict[str, str] | None = None, name: str = "haproxy") -> HAProxy:
    """HAProxy on `host` with `config_text` (`name`: its files' names, for a second one)."""
    cfg = host.dir / f"{name}.cfg"
    cfg.write_text(config_text)
    full_env = {**os.environ, **(env or {})}
    # Refuse a bad config first, inside the host (its names resolve there, as in a container)
    check = host.exec(["env", *[f"{k}={v}" for k, v in (env or {}).items()], tool("haproxy"),
                       "-c", "-f", str(cfg)], check=False)
    if check.returncode != 0:
        raise TestBedError(f"haproxy -c on {host.name}: {check.stdout}{check.stderr}")
    proc = host.spawn([tool("haproxy"), "-W", "-db", "-f", str(cfg)], log=f"{name}.log",
                      env=full_env)

    def listening() -> bool:
        if proc.poll() is not None:
            raise TestBedError(f"haproxy on {host.name} exited {proc.returncode}: "
                               f"see {host.dir / (name + '.log')}")
        out = host.exec(["ss", "-ltnH"]).stdout
        return all(f":{p} " in out for p in ports)

    wait_until(listening, timeout=20, what=f"haproxy on {host.name} to listen on {list(ports)}")
    return HAProxy(host=host, proc=proc, config=cfg, ports=list(ports))


def start_keepalived(host: Host, *, vip: str, prefix: int, priority: int
                     ) -> subprocess.Popen[bytes]:
    """keepalived beside the host's HAProxy, started by the image's own entrypoint
    (docker/keepalived/entrypoint.sh) with etc/keepalived.conf.template: it holds `vip` while
    it is MASTER. Its files go in the host's directory (the hosts share a file system)."""
    proc = host.spawn(
        ["sh", str(REPO / "docker" / "keepalived" / "entrypoint.sh")], log="keepalived.log",
        env={**os.environ, "ROUTER_VIP": vip, "ROUTER_VIP_PREFIX": str(prefix),
             "VRRP_PRIORITY": str(priority), "VRRP_NAME": host.name,
             "KEEPALIVED_TEMPLATE": str(REPO / "etc" / "keepalived.conf.template"),
             "KEEPALIVED_RUNDIR": str(host.dir / "keepalived")})

    def vrrp_running() -> bool:
        if proc.poll() is not None:
            raise TestBedError(f"keepalived on {host.name} exited {proc.returncode}: see "
                               f"{host.dir / 'keepalived.log'}")
        return (host.dir / "keepalived" / "vrrp.pid").exists()

    wait_until(vrrp_running, timeout=20, what=f"keepalived's VRRP process on {host.name}")
    return proc


def holds_address(host: Host, address: str) -> bool:
    """Whether `address` is configured on the host's eth0 (the VRRP MASTER's virtual IP)."""
    out = host.exec(["ip", "-o", "-4", "addr", "show", "dev", "eth0"], check=False).stdout
    return f" {address}/" in out


def tcp_proxy_config(listen_port: int, backends: Sequence[tuple[str, str, int]]) -> str:
    """A plain TCP proxy: `listen_port` to the given (name, address, port) servers."""
    servers = "\n".join(f"    server {n} {a}:{p} check inter 1s" for n, a, p in backends)
    return f"""global
    maxconn 256
defaults
    mode tcp
    timeout connect 2s
    timeout client 1m
    timeout server 1m
listen mysql
    bind 0.0.0.0:{listen_port}
{servers}
"""
