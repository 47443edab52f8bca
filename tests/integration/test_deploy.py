"""deploy/kubernetes and deploy/swarm (issue 12): the test bed boots database nodes with
exactly the environment those files give the database containers, read through the reference
decoders (tests/testbed/deploy.py), named as the scheduler names them (mysql-0.. for the
StatefulSet's pods, mysql-1.. for the stack's task slots), and on Kubernetes as the non-root
user of the pod's securityContext, its data volume prepared as fsGroup prepares it. No
scheduler runs on this machine: a kubelet needs a container runtime (CRI), a swarm needs
dockerd, and there is no container engine here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_galera import every_row_everywhere, wsrep
from tests.integration.test_replication import admin, primary, roles
from tests.testbed.bed import TestBed
from tests.testbed.cluster import Node, boot_cluster
from tests.testbed.deploy import KUBERNETES, SWARM
from tests.testbed.util import wait_until
from tests.testbed.workload import Writer, create_table

pytestmark = pytest.mark.integration


def uids(pid: int | None) -> set[int]:
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    return {int(u) for line in status.splitlines() if line.startswith("Uid:")
            for u in line.split()[1:]}


def runs_as_mysql(n: Node) -> None:
    import pwd
    mysql = pwd.getpwnam("mysql").pw_uid
    assert uids(n.supervisor_pid()) == {mysql}, f"{n.name}'s supervisor is not mysql's"
    assert uids(n.mysqld_pid()) == {mysql}, f"{n.name}'s mysqld is not mysql's"
    # the supervisor's own errors (mysqld's and the agent's lines say what they saw of a
    # lost peer)
    lines = [json.loads(line) for line in n.log.read_text().splitlines()
             if line.startswith("{")]  # the init shim and the bed write plain text too
    errors = [d for d in lines if d["level"] == "error"
              and d["logger"] not in ("autopilot_mysql.mysqld", "autopilot_mysql.consul-agent")]
    assert not errors, errors[:3]


def writes_reach_every_node(nodes: list[Node]) -> None:
    p = primary(nodes)
    create_table(p)
    writer = Writer(p.host.ip)
    writer.start()
    wait_until(lambda: len(writer.acked) > 20, timeout=30, what=f"writes on {p.name}")
    writer.halt()
    every_row_everywhere(nodes, set(writer.acked))


def test_kubernetes_statefulset_pods_replicate_and_fail_over_as_non_root(bed: TestBed) -> None:
    nodes = boot_cluster(bed, 3, deployment=KUBERNETES, timeout=120)
    assert [n.name for n in nodes] == ["mysql-0", "mysql-1", "mysql-2"]
    for n in nodes:
        runs_as_mysql(n)
    old = primary(nodes)
    create_table(old)
    writer = Writer(old.host.ip)
    writer.start()
    wait_until(lambda: len(writer.acked) > 20, timeout=30, what="writes")
    old.host.kill()  # the pod's machine lost
    rest = [n for n in nodes if n is not old]
    new = primary(rest)
    writer.halt()
    wait_until(lambda: roles(rest).count("replica") == 1, timeout=30,
               what="the other pod to follow the new primary")
    every_row_everywhere(rest, set(writer.acked))
    doc = json.loads(admin(new, "list", "-f", "json").stdout)
    assert doc["leader"] == new.name, doc
    old.host.restart(graceful=False)  # rescheduled with its volume
    wait_until(lambda: old.http("/replica") == 200, timeout=90,
               what=f"{old.name} to rejoin as a replica")
    every_row_everywhere(nodes, set(writer.acked))
    for n in nodes:
        runs_as_mysql(n)
    print(f"StatefulSet pods as mysql: {old.name} lost, {new.name} primary, "
          f"{len(writer.acked)} rows on every pod")


def test_kubernetes_galera_pods_as_non_root(bed: TestBed) -> None:
    """TOPOLOGY=galera in the ConfigMap: a bootstrap and two joins by mariabackup SST, all as
    the mysql user (its mysql@localhost account is the donor's)."""
    nodes = boot_cluster(bed, 3, deployment=KUBERNETES, timeout=180, TOPOLOGY="galera")
    for n in nodes:
        runs_as_mysql(n)
    states = {n.name: wsrep(n) for n in nodes}
    assert len({s["wsrep_cluster_state_uuid"] for s in states.values()}) == 1, states
    assert all(s["wsrep_cluster_size"] == "3" for s in states.values()), states
    writes_reach_every_node(nodes)


def test_swarm_tasks_named_by_their_slot(bed: TestBed) -> None:
    nodes = boot_cluster(bed, 3, deployment=SWARM, timeout=120)
    assert [n.name for n in nodes] == ["mysql-1", "mysql-2", "mysql-3"]
    assert {n.status()["node"] for n in nodes} == {"mysql-1", "mysql-2", "mysql-3"}
    writes_reach_every_node(nodes)
