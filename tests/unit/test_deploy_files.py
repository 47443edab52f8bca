"""deploy/kubernetes and deploy/swarm, checked without a scheduler: decoded by the reference
implementations of their formats (tools/kubecheck: the Kubernetes API types, strictly;
tools/dockercheck: compose-go, as `docker stack deploy` loads a stack file), and held against
what issue 12 asks of them and against the supervisor's own settings validation. The
integration tests (test_deploy.py) boot nodes with the same environments."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from autopilot_mysql.config import VARIABLES, load_settings
from tests.testbed import deploy
from tests.testbed.util import REPO, tool

FILE_VARS = {f"{k}_FILE" for k in VARIABLES} | {"AWS_SECRET_ACCESS_KEY_FILE"}
SECRET_VARS = {"MARIADB_ROOT_PASSWORD", "MARIADB_PASSWORD", "MYSQL_REPL_PASSWORD",
               "AWS_SECRET_ACCESS_KEY", "MYSQL_ROOT_PASSWORD", "MYSQL_PASSWORD"}


def settings_from(env: dict[str, str], files: dict[str, str], tmp_path: Path) -> Any:
    """load_settings on a container's environment, its secret files materialized."""
    real = {}
    for target, value in files.items():
        p = tmp_path / Path(target).name
        p.write_text(value)
        real[target] = str(p)
    return load_settings({k: real.get(v, v) for k, v in env.items()})


# --- Kubernetes ---------------------------------------------------------------------------------

def test_every_manifest_decodes_strictly_and_a_typo_is_refused(tmp_path: Path) -> None:
    kinds = sorted((o["object"]["kind"], o["object"]["metadata"]["name"])
                   for o in deploy.kubernetes_objects())
    assert kinds == sorted([
        ("ConfigMap", "autopilot-mysql"), ("Deployment", "haproxy"),
        ("PodDisruptionBudget", "consul"), ("PodDisruptionBudget", "haproxy"),
        ("PodDisruptionBudget", "mysql"), ("Service", "consul"), ("Service", "consul-dns"),
        ("Service", "mysql"), ("Service", "mysql-router"), ("StatefulSet", "consul"),
        ("StatefulSet", "mysql")])
    text = (REPO / "deploy" / "kubernetes" / "mysql.yaml").read_text()
    for wrong, says in (("publishNotReadyAddresses", "unknown field"),
                        ("terminationGracePeriodSeconds: 60",
                         "terminationGracePeriodSeconds: sixty")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text.replace(wrong, wrong + "s" if says == "unknown field" else says))
        proc = subprocess.run([tool("kubecheck"), str(bad)], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode != 0 and "bad.yaml: document" in proc.stderr, proc.stderr


def test_the_statefulset_as_issue_12_asks(tmp_path: Path) -> None:
    sts = deploy.kubernetes_object("StatefulSet", "mysql")["spec"]
    pod = sts["template"]["spec"]
    c = deploy.database_container()
    assert sts["serviceName"] == "mysql" and sts["replicas"] == 3
    assert sts["podManagementPolicy"] == "Parallel"  # Galera's census needs every member
    assert [v["metadata"]["name"] for v in sts["volumeClaimTemplates"]] == ["data"]
    assert {"name": "data", "mountPath": "/var/lib/mysql"} in c["volumeMounts"]
    svc = deploy.kubernetes_object("Service", "mysql")["spec"]
    assert svc["clusterIP"] == "None" and svc["publishNotReadyAddresses"] is True
    assert {p["port"] for p in svc["ports"]} == {3306, 9200, 4567, 4568, 4444}
    pdb = deploy.kubernetes_object("PodDisruptionBudget", "mysql")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"] == sts["selector"]
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    assert anti[0]["labelSelector"] == sts["selector"]
    env = deploy.kubernetes_environment("mysql-1", "10.1.2.3")
    settings = settings_from(env, deploy.kubernetes_secret_files(), tmp_path)
    assert settings.node_name == "mysql-1" and settings.advertise_address == "10.1.2.3"
    assert settings.consul_agent and len(settings.consul_servers) == 3
    assert settings.root_password == deploy.KUBERNETES_SECRET["root-password"]
    health = [p["containerPort"] for p in c["ports"] if p["name"] == "health"]
    assert health == [settings.health_port]
    assert c["livenessProbe"]["httpGet"]["path"] == "/liveness"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readiness"
    assert c["startupProbe"]["httpGet"]["path"] == "/liveness"
    assert all(c[p]["httpGet"]["port"] == "health"
               for p in ("livenessProbe", "readinessProbe", "startupProbe"))
    assert pod["terminationGracePeriodSeconds"] > settings.stop_timeout
    # secrets only as files of a Secret volume, never in the environment
    assert not SECRET_VARS & set(env)
    assert all("secretKeyRef" not in str(v) for v in c["env"])
    assert set(env) <= set(VARIABLES) | FILE_VARS, set(env) - set(VARIABLES)
    # non-root: the image's mysql user, whose uid the Dockerfile fixes
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == sc["fsGroup"] == 999
    assert "useradd --system --uid 999 --gid mysql" in \
        (REPO / "docker" / "Dockerfile").read_text()
    secret_volume = next(v for v in pod["volumes"] if "secret" in v)["secret"]
    assert secret_volume["defaultMode"] & 0o040, "the mysql group (fsGroup) must read it"


def test_galera_is_the_configmaps_one_word_change(tmp_path: Path) -> None:
    env = {**deploy.kubernetes_environment("mysql-0", "10.1.2.3"), "TOPOLOGY": "galera"}
    assert settings_from(env, deploy.kubernetes_secret_files(), tmp_path).topology == "galera"


def test_consul_servers_and_router() -> None:
    consul = deploy.kubernetes_object("StatefulSet", "consul")["spec"]
    assert consul["replicas"] == 3 and consul["podManagementPolicy"] == "Parallel"
    args = consul["template"]["spec"]["containers"][0]["args"]
    assert "-bootstrap-expect=3" in args and any("raft_multiplier = 1" in a for a in args)
    joins = {a.split("=", 1)[1] for a in args if a.startswith("-retry-join=")}
    env = deploy.kubernetes_environment("mysql-0", "10.1.2.3")
    assert joins == set(env["CONSUL"].split(","))  # the agents join the same three servers
    assert deploy.kubernetes_object("PodDisruptionBudget", "consul")["spec"][
        "maxUnavailable"] == 1
    hap = deploy.kubernetes_object("Deployment", "haproxy")["spec"]["template"]["spec"]
    hc = hap["containers"][0]
    assert {e["name"]: e["value"] for e in hc["env"]}["CONSUL_DNS"] == "consul-dns:53"
    assert hap["volumes"][0]["configMap"]["name"] == "haproxy-cfg"
    # the ConfigMap is made from etc/haproxy.cfg itself (the tested file), as README says
    assert "--from-file=haproxy.cfg=etc/haproxy.cfg" in \
        (REPO / "deploy" / "kubernetes" / "haproxy.yaml").read_text()
    router = deploy.kubernetes_object("Service", "mysql-router")["spec"]
    assert {p["port"] for p in router["ports"]} == {3306, 3307}


# --- Swarm --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return deploy.stack_model()


def test_the_stack_as_issue_12_asks(stack: dict[str, Any], tmp_path: Path) -> None:
    mysql = stack["services"]["mysql"]
    assert mysql["hostname"] == "mysql-{{.Task.Slot}}"
    assert mysql["deploy"]["replicas"] == 3
    assert mysql["deploy"]["placement"]["max_replicas_per_node"] == 1
    assert mysql["deploy"]["update_config"]["parallelism"] == 1
    assert stack["networks"]["db"]["driver"] == "overlay"
    assert all(s["external"] for s in stack["secrets"].values())
    # one volume per slot, so a replaced task keeps its data
    vol = next(v for v in mysql["volumes"] if v["target"] == "/var/lib/mysql")
    assert "{{.Task.Slot}}" in stack["volumes"][vol["source"]]["name"]
    env = deploy.swarm_environment(2)
    assert not SECRET_VARS & set(env)
    assert set(env) <= set(VARIABLES) | FILE_VARS, set(env) - set(VARIABLES)
    settings = settings_from(env, deploy.swarm_secret_files(), tmp_path)
    assert settings.node_name == "mysql-2" and settings.consul_agent
    assert settings.root_password == deploy.SWARM_SECRETS["mariadb_root_password"]
    grace = re.fullmatch(r"(\d+)s", mysql["stop_grace_period"])
    assert grace and int(grace.group(1)) > settings.stop_timeout
    hap = stack["services"]["haproxy"]
    assert stack["configs"][hap["configs"][0]["source"]]["file"] == \
        str(REPO / "etc" / "haproxy.cfg")
    assert {p["target"] for p in hap["ports"]} == {3306, 3307}
    consul = stack["services"]["consul"]
    assert "-retry-join=tasks.consul" in consul["command"]
    assert env["CONSUL"] == "tasks.consul"
