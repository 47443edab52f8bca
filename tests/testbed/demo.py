"""The demo: a three-node autopilot-mysql cluster on the namespace test bed, no Docker needed.

    python -m tests.testbed.demo up       # (make demo) Consul, S3 (MinIO), db1..db3
    python -m tests.testbed.demo status   # (make demo-status)
    python -m tests.testbed.demo down     # (make demo-down) graceful stop, then remove all

Each database host runs `autopilot-mysql run` as its PID 1 with a local Consul agent
(CONSUL_AGENT=true), as docker-compose.yml does. The cluster outlives this command; its state
is in /run/apm-testbed/<id>.json and `down` removes it by id.
"""

from __future__ import annotations

import argparse
import sys
import time

import requests

from .bed import TestBed, persistent_beds, teardown_persistent
from .cluster import (
    APP_DB,
    APP_PASSWORD,
    APP_USER,
    HEALTH_PORT,
    REPL_PASSWORD,
    ROOT_PASSWORD,
    make_node,
)
from .components import S3Server, start_consul, start_minio
from .util import wait_until

NODES = ("db1", "db2", "db3")


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
        consul = start_consul(consul_host)
        s3_host = bed.add_host("s3")
        s3_host.boot()
        s3 = start_minio(s3_host)
        s3.client().create_bucket(Bucket="autopilot-mysql")
        nodes = []
        for name in NODES:
            node = make_node(bed.add_host(name))  # docker-compose.yml's environment
            node.boot()
            nodes.append(node)
        bed.save()
        for node in nodes:
            node.wait_healthy(timeout=90)
        wait_until(lambda: sum(n.http("/primary") == 200 for n in nodes) == 1, timeout=60,
                   what="one primary among the demo nodes")
    except BaseException:
        print("the demo did not come up; removing it (logs were under "
              f"{bed.root})", file=sys.stderr)
        bed.save()
        teardown_persistent({**_state_of(bed)}, timeout=10)
        raise
    print(f"autopilot-mysql demo is up in {time.monotonic() - t0:.0f}s on {bed.net} "
          f"(state /run/apm-testbed/{bed.id}.json)\n")
    _print(bed.id, consul.address, s3)
    return 0


def _state_of(bed: TestBed) -> dict[str, object]:
    import json
    st: dict[str, object] = json.loads(bed.state_file.read_text())
    st["id"] = bed.id
    return st


def _print(bed_id: str, consul_addr: str, s3: S3Server | None) -> None:
    st = next(s for s in persistent_beds() if s["id"] == bed_id)
    hosts = st["hosts"]
    print(f"  {'host':<8} {'address':<15} role")
    for name in NODES:
        ip = hosts[name]["ip"]
        try:
            doc = requests.get(f"http://{ip}:{HEALTH_PORT}/status", timeout=2).json()
            access = "writable" if doc["writable"] else "read-only"
            role = f"{doc['role']}, {doc['state']}, {access}"
        except (requests.RequestException, ValueError):
            role = "not answering"
        print(f"  {name:<8} {ip:<15} {role}")
    print(f"  {'consul':<8} {hosts['consul']['ip']:<15} http://{consul_addr}/v1/catalog/"
          "service/mysql")
    if s3 is not None:
        print(f"  {'s3':<8} {hosts['s3']['ip']:<15} {s3.endpoint} (key {s3.access_key}, "
              f"secret {s3.secret_key}, bucket autopilot-mysql)")
    primary = next((hosts[n]["ip"] for n in NODES
                    if _code(f"http://{hosts[n]['ip']}:{HEALTH_PORT}/primary") == 200), None)
    print()
    if primary:
        print(f"Connect to the primary:  mariadb -h {primary} -u {APP_USER} "
              f"-p{APP_PASSWORD} {APP_DB}")
        print(f"As root:                 mariadb -h {primary} -u root -p{ROOT_PASSWORD}")
    print(f"Replication user:        repl / {REPL_PASSWORD}")
    print(f"A node's status:         .venv/bin/autopilot-mysql status --url "
          f"http://{hosts['db1']['ip']}:{HEALTH_PORT}")
    print(f"Logs:                    {st['root']}/<host>/pid1.log")
    print("Fault injection:         see tests/testbed (kill, pause, partition a host)")
    print("Tear it all down:        make demo-down")


def _code(url: str) -> int:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return 0


def status() -> int:
    beds = persistent_beds()
    if not beds:
        print("no demo is running (start one with `make demo`)")
        return 1
    for st in beds:
        print(f"demo {st['id']} on {st['net']}:")
        consul_ip = st["hosts"]["consul"]["ip"]
        _print(st["id"], f"{consul_ip}:8500", None)
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


def main() -> int:
    p = argparse.ArgumentParser(prog="demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["up", "status", "down"])
    args = p.parse_args()
    return {"up": up, "status": status, "down": down}[args.cmd]()


if __name__ == "__main__":
    sys.exit(main())
