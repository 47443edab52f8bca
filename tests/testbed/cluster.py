"""autopilot-mysql nodes on the test bed: each database host boots `autopilot-mysql run` as its
PID 1 with the documented environment variables, exactly as the container's entrypoint does.
The only differences from docker-compose.yml are the data and run directories, which live under
the host's own directory because the hosts share one file system."""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import requests

from .bed import TestBed
from .components import HAProxy
from .host import Host
from .util import CACHE, REPO, run, tool, wait_until

VENV_BIN = Path(sys.executable).parent
ROOT_PASSWORD = "root-secret"
APP_USER, APP_PASSWORD, APP_DB = "app", "app-secret", "app"
REPL_PASSWORD = "repl-secret"
API_TOKEN = "test-token-0123456789"
S3_SECRET = "s3-secret-for-the-bed"  # the bundled MinIO's root password (compose's minio)
# What an .env file gives docker compose on the test bed
SECRETS = {"MARIADB_ROOT_PASSWORD": ROOT_PASSWORD, "MARIADB_PASSWORD": APP_PASSWORD,
           "MYSQL_REPL_PASSWORD": REPL_PASSWORD, "API_TOKEN": API_TOKEN,
           "AWS_SECRET_ACCESS_KEY": S3_SECRET}
# The compose environment's snapshot settings: they name the bundled MinIO (`minio`), which
# only the demo starts; tests that want snapshots give their own (s3_env).
COMPOSE_S3 = ("S3_BUCKET", "S3_ENDPOINT", "S3_CREATE_BUCKET", "AWS_ACCESS_KEY_ID",
              "AWS_SECRET_ACCESS_KEY_FILE")
HEALTH_PORT = 9200


@functools.cache
def compose_model() -> dict[str, Any]:
    """docker-compose.yml as compose-go resolves it (interpolated with the test secrets, as
    an .env file would give them)."""
    out = run([tool("dockercheck"), str(REPO / "docker" / "Dockerfile"),
               str(REPO / "docker-compose.yml")], env={**os.environ, **SECRETS}).stdout
    model: dict[str, Any] = json.loads(out)
    return model


def compose_environment() -> dict[str, str]:
    """The `mysql` service's environment in docker-compose.yml."""
    return dict(compose_model()["services"]["mysql"]["environment"])


def compose_secrets(service: str = "mysql") -> dict[str, str]:
    """The service's compose secrets as the container sees them: /run/secrets/<target> ->
    the value (compose takes it from the environment variable the secret names)."""
    model = compose_model()
    out = {}
    for s in model["services"][service].get("secrets") or []:
        source = model["secrets"][s["source"]]
        out[s.get("target") or f"/run/secrets/{s['source']}"] = SECRETS[source["environment"]]
    return out


@dataclass(frozen=True)
class Deployment:
    """Where a database container's environment comes from: docker-compose.yml (COMPOSE), or
    deploy/kubernetes and deploy/swarm (tests/testbed/deploy.py)."""
    name: str
    environment: Callable[[Host], dict[str, str]]  # the container's, on this host
    secret_files: Callable[[], dict[str, str]]  # secret file in the container -> its value
    host_name: Callable[[int], str]  # the i-th node's host name (from 1): db1, mysql-0, ...
    user: str | None = None  # the container's user when not root (securityContext)


COMPOSE = Deployment("docker-compose.yml", lambda host: compose_environment(), compose_secrets,
                     lambda i: f"db{i}")


def materialize_secrets(env: dict[str, str | None], host: Host,
                        deployment: Deployment = COMPOSE) -> None:
    """What Docker or the kubelet mounts as secret files, in the host's own directory: the
    *_FILE variables pointing there are pointed at these files (readable by the container's
    user, as a Secret volume's files are by its fsGroup)."""
    files = deployment.secret_files()
    sdir = host.dir / "secrets"
    for k, v in list(env.items()):
        if k.endswith("_FILE") and v in files:
            sdir.mkdir(parents=True, exist_ok=True)
            p = sdir / Path(v).name
            p.write_text(files[v])
            if deployment.user:
                shutil.chown(p, group=deployment.user)
                p.chmod(0o440)
            else:
                p.chmod(0o600)
            env[k] = str(p)


def node_env(host: Host, consul: str = "consul", deployment: Deployment = COMPOSE,
             **overrides: str | None) -> dict[str, str]:
    """The deployment's environment (docker-compose.yml's by default), plus what differs on a
    shared file system (data and run directories under the host's own directory) and the
    tools' PATH. The Consul server host is named `consul` on the test bed, as the compose
    service is."""
    env: dict[str, str | None] = {
        **deployment.environment(host),
        "PATH": f"{VENV_BIN}:{CACHE / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                "/sbin:/bin",
        "HOME": str(host.dir),
        "LANG": "C.UTF-8",
        "CONSUL": consul,
        "MYSQL_DATADIR": str(host.dir / "data"),
        "MYSQL_RUNDIR": str(host.dir / "run"),
        "HOOKS_DIR": str(host.dir / "hooks.d"),  # the container's own /etc/autopilot-mysql
        "MYSQL_CONF_DIRS": str(host.dir / "conf.d"),  # the container's own /etc/mysql/conf.d
        "INITDB_DIR": str(host.dir / "initdb.d"),  # its own /docker-entrypoint-initdb.d
    }
    if not overrides.pop("COMPOSE_S3", None):
        for k in COMPOSE_S3:
            env.pop(k, None)
    env.update(overrides)
    materialize_secrets(env, host, deployment)
    return {k: v for k, v in env.items() if v is not None}


# PID 1 as a non-root user. This machine's Python and tools live under /root (mode 700),
# which the image has in world-readable places (/opt/autopilot, /usr/local/bin): inside the
# host's own mount namespace only, /root is replaced by a world-traversable tmpfs holding
# the two trees the node needs, then PID 1 becomes the user (exec: it stays PID 1).
AS_USER = r"""stage=$1 user=$2; shift 2
if [ -d /root ] && [ -d "$HOME" ] && ! setpriv --reuid="$user" --regid="$user" \
    --clear-groups test -x /root; then
  mkdir -p "$stage" && mount --bind /root "$stage" \
    && mount -t tmpfs -o mode=0755 apm-root /root || exit 1
  for d in .pyenv .cache; do
    if [ -e "$stage/$d" ]; then mkdir /root/$d && mount --bind "$stage/$d" /root/$d; fi
  done
fi
exec setpriv --reuid="$user" --regid="$user" --clear-groups -- "$@"
"""


@dataclass
class Node:
    host: Host
    env: dict[str, str]
    user: str | None = None  # runs as this user, not root (Kubernetes' runAsUser)

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def socket(self) -> Path:
        return Path(self.env["MYSQL_RUNDIR"]) / "mysqld.sock"

    @property
    def datadir(self) -> Path:
        return Path(self.env["MYSQL_DATADIR"])

    @property
    def log(self) -> Path:
        return self.host.dir / "pid1.log"

    def url(self, path: str) -> str:
        return f"http://{self.host.ip}:{self.env.get('HEALTH_PORT', HEALTH_PORT)}{path}"

    def boot(self, *mysqld_args: str) -> None:
        """`autopilot-mysql run [mysqld options]`, the image's entrypoint and command; as
        `user` when set, with its volumes prepared as a kubelet does (fsGroup)."""
        argv = [str(VENV_BIN / "autopilot-mysql"), "run", *mysqld_args]
        if self.user:
            self._as_kubelet_prepares()
            argv = ["sh", "-c", AS_USER, "sh", str(self.host.dir / "root-stage"), self.user,
                    *argv]
        self.host.boot(argv, env=self.env)

    def _as_kubelet_prepares(self) -> None:
        """A volume with fsGroup: the directory is the root's and the group's (setgid), so the
        container's non-root user writes there without owning it; the image's /run/mysqld is
        the mysql user's."""
        assert self.user
        for var, mode in (("MYSQL_DATADIR", 0o2770), ("MYSQL_RUNDIR", 0o755)):
            d = Path(self.env[var])
            d.mkdir(parents=True, exist_ok=True)
            if var == "MYSQL_DATADIR":
                shutil.chown(d, "root", self.user)
            else:
                shutil.chown(d, self.user, self.user)
            d.chmod(mode)

    def http(self, path: str) -> int:
        try:
            return requests.get(self.url(path), timeout=2).status_code
        except requests.RequestException:
            return 0

    def status(self) -> dict[str, Any]:
        r = requests.get(self.url("/status"), timeout=2)
        r.raise_for_status()
        doc: dict[str, Any] = r.json()
        return doc

    def app(self, **kw: Any) -> pymysql.Connection[Any]:
        """The application user, over TCP from the harness (as a client would connect)."""
        return pymysql.connect(host=self.host.ip, port=3306, user=APP_USER,
                               password=APP_PASSWORD, database=APP_DB, autocommit=True,
                               connect_timeout=3, **kw)

    def root(self) -> pymysql.Connection[Any]:
        """root over the unix socket (socket auth, as the supervisor itself connects)."""
        return pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True,
                               connect_timeout=3)

    def mysqld_pid(self) -> int | None:
        for pid in self.host.processes():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "mariadbd":
                    return pid
            except OSError:
                continue
        return None

    def supervisor_pid(self) -> int | None:
        for pid in self.host.processes():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"supervise" in cmd:
                return pid
        return None

    def wait_http(self, path: str, code: int = 200, timeout: float = 60) -> None:
        def probe() -> bool:
            if not self.host.running:
                raise RuntimeError(f"{self.name}'s PID 1 exited; see {self.log}")
            return self.http(path) == code

        wait_until(probe, timeout=timeout,
                   what=f"{self.name}'s {path} to answer {code} (log: {self.log})")

    def wait_healthy(self, timeout: float = 60) -> None:
        self.wait_http("/health", 200, timeout)


def make_node(host: Host, consul: str = "consul", deployment: Deployment = COMPOSE,
              **overrides: str | None) -> Node:
    return Node(host=host, env=node_env(host, consul, deployment, **overrides),
                user=deployment.user)



def healthy_cluster(nodes: list[Node]) -> bool:
    """One primary and every other node replicating (as the role endpoints say)."""
    codes = [(n.http("/primary"), n.http("/replica")) for n in nodes
             if n.host.running and not n.host.paused]
    return (len(codes) == len(nodes) and sum(p == 200 for p, _ in codes) == 1
            and sum(r == 200 for _, r in codes) == len(nodes) - 1)


def s3_env(s3: Any, bucket: str = "snapshots", **overrides: str) -> dict[str, str]:
    """The S3_* settings for the test bed's MinIO (the bucket is created here)."""
    try:
        s3.client().create_bucket(Bucket=bucket)
    except s3.client().exceptions.BucketAlreadyOwnedByYou:
        pass
    return {"S3_BUCKET": bucket, "S3_ENDPOINT": s3.endpoint, "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key, "S3_REGION": s3.region, **overrides}


def boot_cluster(bed: TestBed, count: int = 3, timeout: float = 90,
                 volumes: dict[str, int] | None = None,
                 per_node: dict[str, dict[str, str]] | None = None,
                 consul_extra: dict[str, Any] | None = None, consul_token: str = "",
                 consul_servers: int = 1, deployment: Deployment = COMPOSE,
                 **overrides: str) -> list[Node]:
    """A Consul server host named `consul` and `count` autopilot-mysql nodes db1..dbN with
    docker-compose.yml's environment (or another deployment's, its nodes named as it names
    them); returns once one is primary and the rest replicate.
    `volumes`: node name -> MiB of a data volume of its own (one that can fill up);
    `per_node`: node name -> variables of that node only (its tags, say); `consul_extra`,
    `consul_token`: more settings of the Consul server (ACLs, TLS) and the token the test
    bed's own reads then need. `consul_servers`: 3 gives the production shape, servers
    `consul`, `consul2`, `consul3`, every node's agent told to join all three (CONSUL)."""
    from .components import start_consul, start_consul_cluster

    chost = bed.add_host("consul")
    chost.boot()
    if consul_servers == 1:
        start_consul(chost, extra=consul_extra, token=consul_token)
    else:
        more = [bed.add_host(f"consul{i}") for i in range(2, consul_servers + 1)]
        for h in more:
            h.boot()
        start_consul_cluster([chost, *more])
        overrides = {"CONSUL": ",".join(h.name for h in [chost, *more]), **overrides}
    bed.consul_token = consul_token  # type: ignore[attr-defined]  # for sync_key
    hosts = [bed.add_host(deployment.host_name(i)) for i in range(1, count + 1)]
    for h in hosts:
        if volumes and h.name in volumes:
            h.small_volume(volumes[h.name])
    nodes = [make_node(h, deployment=deployment,
                       **{**overrides, **(per_node or {}).get(h.name, {})}) for h in hosts]
    for n in nodes:
        n.boot()
    wait_until(lambda: healthy_cluster(nodes), timeout=timeout,
               what=f"one primary and {count - 1} replicating replicas")
    # What the CLI and a handover read: Consul's view, a moment behind the nodes' own (CI: a
    # switchover refused because a just-started node's check did not pass yet).
    service = overrides.get("SERVICE_NAME", "mysql")
    wait_until(lambda: passing_in_consul(bed, service) == count, timeout=timeout,
               what=f"Consul to see the {count} nodes' checks passing")
    if count > 1 and overrides.get("TOPOLOGY") != "galera":
        # the guarantees are stated for a synced acknowledgement set
        wait_until(lambda: synced(bed), timeout=timeout,
                   what="the acknowledgement set to be synced")
    return nodes


def sync_key(bed: TestBed, service: str = "mysql") -> dict[str, Any] | None:
    """The acknowledgement set (autopilot_mysql/election.py) as Consul holds it."""
    token = getattr(bed, "consul_token", "")
    r = requests.get(f"http://{bed.hosts['consul'].ip}:8500/v1/kv/service/{service}/sync",
                     timeout=2, headers={"X-Consul-Token": token} if token else {})
    if r.status_code == 404:
        return None
    value: dict[str, Any] = json.loads(base64.b64decode(r.json()[0]["Value"]))
    return value


def passing_in_consul(bed: TestBed, service: str = "mysql") -> int:
    """How many of the service's instances Consul counts as passing (every check)."""
    token = getattr(bed, "consul_token", "")
    r = requests.get(f"http://{bed.hosts['consul'].ip}:8500/v1/health/service/{service}",
                     params={"passing": "1"}, timeout=2,
                     headers={"X-Consul-Token": token} if token else {})
    return len(r.json()) if r.ok else 0


def synced(bed: TestBed, service: str = "mysql") -> bool:
    """Every acknowledged commit is on a member of the acknowledgement set."""
    return bool((sync_key(bed, service) or {}).get("synced"))


def start_router(bed: TestBed, name: str = "lb") -> HAProxy:
    """etc/haproxy.cfg on a host named `name`, resolving servers through the `consul` host."""
    from .components import start_haproxy

    lbh = bed.add_host(name)
    lbh.boot()
    return start_haproxy(lbh, (REPO / "etc" / "haproxy.cfg").read_text(), [3306, 3307],
                         env={"CONSUL_DNS": f"{bed.hosts['consul'].ip}:8600",
                              "SERVICE_NAME": "mysql", "MAX_NODES": "10"})
