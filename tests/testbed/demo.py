"""The demo: what docker-compose.yml describes, on the namespace test bed, no Docker needed.

    python -m tests.testbed.demo up        # (make demo) consul, minio, mysql-1, haproxy; then
                                           # scaled to three, as `docker compose up -d` and
                                           # `docker compose up -d --scale mysql=3`
    python -m tests.testbed.demo scale N   # (make demo-scale N=5) grow or shrink to N nodes
    python -m tests.testbed.demo status    # (make demo-status)
    python -m tests.testbed.demo down      # (make demo-down) graceful stop, then remove all

Each service is a host named after it (mysql-1, mysql-2 ... as compose names the containers),
started with the compose file's own settings: the database hosts run `autopilot-mysql run`
as their PID 1 with the `mysql` service's environment and secrets (as files), snapshots go
to the `minio` host (the bucket is created by the first node), HAProxy runs etc/haproxy.cfg
with the `haproxy` service's environment. Clients use HAProxy's write and read ports. The
cluster outlives this command; its state is in /run/apm-testbed/<id>.json and `down`
removes it by id.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

import requests

from .bed import TestBed, persistent_beds, teardown_persistent
from .cluster import (
    APP_DB,
    APP_PASSWORD,
    APP_USER,
    HEALTH_PORT,
    ROOT_PASSWORD,
    S3_SECRET,
    compose_model,
    make_node,
)
from .components import start_consul, start_haproxy, start_minio
from .util import REPO, wait_until

START_NODES = 3  # after the first, as `docker compose up -d --scale mysql=3`


def _compose_env(service: str) -> dict[str, str]:
    return dict(compose_model()["services"][service].get("environment") or {})


def _nodes(hosts: dict[str, Any]) -> list[str]:
    """The database hosts, mysql-1 first (compose's container numbering)."""
    names = [n for n in hosts if re.fullmatch(r"mysql-\d+", n)]
    return sorted(names, key=lambda n: int(n.split("-")[1]))


def _add_node(bed: TestBed, name: str) -> Any:
    node = make_node(bed.add_host(name), COMPOSE_S3="1")  # the compose environment, all of it
    node.boot()
    bed.save()
    return node


def _wait_serving(bed: TestBed, names: list[str], timeout: float = 300) -> None:
    def role(name: str) -> str:
        try:
            r = requests.get(f"http://{bed.hosts[name].ip}:{HEALTH_PORT}/status", timeout=2)
            doc = r.json()
        except (requests.RequestException, ValueError):
            return "down"
        return str(doc["role"]) if doc.get("healthy") else "unhealthy"

    def ready() -> bool:
        roles = [role(n) for n in names]
        return roles.count("primary") == 1 and roles.count("replica") == len(names) - 1

    wait_until(ready, timeout=timeout,
               what=f"one primary and {len(names) - 1} replica(s) among {', '.join(names)}")
    if "haproxy" in bed.hosts:
        wait_until(lambda: _routed(bed.hosts["haproxy"].ip) == (1, len(names) - 1),
                   timeout=60, what="HAProxy to route to the primary and every replica")


def _routed(lb: str) -> tuple[int, int]:
    """Servers HAProxy counts as up in its write and read backends (its Prometheus
    exporter): the addresses it is announced with are ready for clients once these settle."""
    from prometheus_client.parser import text_string_to_metric_families
    text = requests.get(f"http://{lb}:8404/metrics", timeout=2).text
    up = {"mysql_primary": 0, "mysql_replicas": 0}
    for fam in text_string_to_metric_families(text):
        if fam.name == "haproxy_server_status":
            for s in fam.samples:
                if s.labels.get("state") == "UP" and s.value == 1 \
                        and s.labels.get("proxy") in up:
                    up[s.labels["proxy"]] += 1
    return up["mysql_primary"], up["mysql_replicas"]


def up() -> int:
    if persistent_beds():
        print("a demo is already running; `make demo-status` shows it, `make demo-down` "
              "removes it", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    bed = TestBed(persistent=True)
    try:
        consul_host = bed.add_host("consul")
        consul_host.boot()
        start_consul(consul_host)
        minio_env = _compose_env("minio")
        minio_host = bed.add_host("minio")
        minio_host.boot()
        start_minio(minio_host, access_key=minio_env["MINIO_ROOT_USER"], secret_key=S3_SECRET)
        print("consul and minio are up; starting mysql-1 (`docker compose up -d`)")
        _add_node(bed, "mysql-1")
        lb_host = bed.add_host("haproxy")
        lb_host.boot()
        start_haproxy(lb_host, (REPO / "etc" / "haproxy.cfg").read_text(), [3306, 3307, 8404],
                      env=_compose_env("haproxy"))
        bed.save()
        _wait_serving(bed, ["mysql-1"])
        print(f"mysql-1 is the primary after {time.monotonic() - t0:.0f}s; scaling to "
              f"{START_NODES} (`docker compose up -d --scale mysql={START_NODES}`)")
        _scale(bed, START_NODES)
    except BaseException:
        print("the demo did not come up; removing it (logs were under "
              f"{bed.root})", file=sys.stderr)
        bed.save()
        teardown_persistent(_state_of(bed), timeout=10)
        raise
    print(f"autopilot-mysql demo is up in {time.monotonic() - t0:.0f}s on {bed.net} "
          f"(state /run/apm-testbed/{bed.id}.json)\n")
    _print(_state_of(bed))
    return 0


def _scale(bed: TestBed, n: int) -> None:
    names = _nodes(bed.hosts)
    if n < 1:
        raise SystemExit("a cluster needs at least one node")
    while len(names) > n:  # compose removes the highest-numbered containers first
        gone = names.pop()
        print(f"stopping and removing {gone}")
        bed.remove_host(gone)
    start = max((int(x.split("-")[1]) for x in names), default=0)
    for i in range(start + 1, start + 1 + n - len(names)):
        print(f"starting mysql-{i}")
        _add_node(bed, f"mysql-{i}")
        names.append(f"mysql-{i}")
    _wait_serving(bed, names)


def _state_of(bed: TestBed) -> dict[str, Any]:
    st = next((s for s in persistent_beds() if s["id"] == bed.id), None)
    if st is None:
        import json
        st = json.loads(bed.state_file.read_text())
        st["id"] = bed.id
    return st


def _print(st: dict[str, Any]) -> None:
    hosts = st["hosts"]
    print(f"  {'host':<9} {'address':<15} role")
    for name in _nodes(hosts):
        ip = hosts[name]["ip"]
        try:
            doc = requests.get(f"http://{ip}:{HEALTH_PORT}/status", timeout=2).json()
            access = "writable" if doc["writable"] else "read-only"
            role = f"{doc['role']}, {doc['state']}, {access}"
        except (requests.RequestException, ValueError):
            role = "not answering"
        print(f"  {name:<9} {ip:<15} {role}")
    for svc, what in (("consul", "http://{ip}:8500/ui"), ("minio", "http://{ip}:9000 (S3)"),
                      ("haproxy", "stats http://{ip}:8404/")):
        if svc in hosts:
            print(f"  {svc:<9} {hosts[svc]['ip']:<15} {what.format(ip=hosts[svc]['ip'])}")
    print()
    if "haproxy" in hosts:
        lb = hosts["haproxy"]["ip"]
        print(f"Writes (the primary):    mariadb -h {lb} -P 3306 -u {APP_USER} "
              f"-p{APP_PASSWORD} {APP_DB}")
        print(f"Reads (the replicas):    mariadb -h {lb} -P 3307 -u {APP_USER} "
              f"-p{APP_PASSWORD} {APP_DB}")
        print(f"As root:                 mariadb -h {lb} -P 3306 -u root -p{ROOT_PASSWORD}")
    print(f"The cluster:             .venv/bin/autopilot-mysql list --url "
          f"http://{hosts[_nodes(hosts)[0]]['ip']}:{HEALTH_PORT}")
    print("Grow or shrink it:       make demo-scale N=5")
    print(f"Logs:                    {st['root']}/<host>/pid1.log")
    print("Tear it all down:        make demo-down")


def scale(n: int) -> int:
    beds = persistent_beds()
    if not beds:
        print("no demo is running (start one with `make demo`)", file=sys.stderr)
        return 1
    bed = TestBed.reopen(beds[0])
    _scale(bed, n)
    print()
    _print(_state_of(bed))
    return 0


def status() -> int:
    beds = persistent_beds()
    if not beds:
        print("no demo is running (start one with `make demo`)")
        return 1
    for st in beds:
        print(f"demo {st['id']} on {st['net']}:")
        _print(st)
    return 0


def down() -> int:
    beds = persistent_beds()
    if not beds:
        print("no demo is running")
        return 0
    for st in beds:
        print(f"stopping demo {st['id']} (graceful stop of every host, then removal)")
        teardown_persistent(st)
    print("demo removed")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["up", "scale", "status", "down"])
    p.add_argument("n", nargs="?", type=int, help="scale: the number of database nodes")
    args = p.parse_args(argv)
    if args.cmd == "scale":
        if args.n is None:
            p.error("scale needs the number of nodes: demo scale 5")
        return scale(args.n)
    return {"up": up, "status": status, "down": down}[args.cmd]()


if __name__ == "__main__":
    sys.exit(main())
