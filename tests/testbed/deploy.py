"""The database containers' environment as deploy/kubernetes and deploy/swarm give it, read
through the reference decoders (tools/kubecheck: the Kubernetes API types, strictly;
tools/dockercheck: compose-go, as `docker stack deploy` loads a stack file), so that the test
bed boots nodes with exactly that environment, as it does with docker-compose.yml
(cluster.COMPOSE). What a scheduler fills in is filled in here the same way: the pod's name
and IP (Kubernetes' downward API), the task slot (Swarm's templates), the Secrets' files."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from .cluster import APP_PASSWORD, REPL_PASSWORD, ROOT_PASSWORD, S3_SECRET, Deployment
from .host import Host
from .util import REPO, run, tool

KUBERNETES_FILES = [REPO / "deploy" / "kubernetes" / f for f in
                    ("consul.yaml", "mysql.yaml", "haproxy.yaml")]
STACK_FILE = REPO / "deploy" / "swarm" / "stack.yml"
# `kubectl create secret generic autopilot-mysql --from-literal=KEY=...` (mysql.yaml's header)
KUBERNETES_SECRET = {"root-password": ROOT_PASSWORD, "password": APP_PASSWORD,
                     "replication-password": REPL_PASSWORD, "s3-secret-key": S3_SECRET}
# `docker secret create NAME -` (stack.yml's header)
SWARM_SECRETS = {"mariadb_root_password": ROOT_PASSWORD, "mariadb_password": APP_PASSWORD,
                 "mysql_repl_password": REPL_PASSWORD}


@functools.cache
def kubernetes_objects() -> list[dict[str, Any]]:
    """Every object of deploy/kubernetes, decoded strictly (kubecheck fails on any unknown
    field, wrong type or unknown kind), as {"file", "object"}."""
    out = run([tool("kubecheck"), *map(str, KUBERNETES_FILES)]).stdout
    objects: list[dict[str, Any]] = json.loads(out)
    return objects


def kubernetes_object(kind: str, name: str) -> dict[str, Any]:
    for o in kubernetes_objects():
        obj = o["object"]
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return dict(obj)
    raise KeyError(f"no {kind} {name} in deploy/kubernetes")


def database_container() -> dict[str, Any]:
    pod = kubernetes_object("StatefulSet", "mysql")["spec"]["template"]["spec"]
    container: dict[str, Any] = next(c for c in pod["containers"] if c["name"] == "mysql")
    return container


_DEPENDENT = re.compile(r"\$\((\w+)\)")


def kubernetes_environment(pod: str, ip: str) -> dict[str, str]:
    """What the kubelet gives the mysql container of pod `pod` at address `ip`: the
    ConfigMaps of envFrom, then env in order (the downward API's metadata.name and
    status.podIP; $(VAR) references to variables defined before, as Kubernetes expands
    them)."""
    c = database_container()
    env: dict[str, str] = {}
    for source in c.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref is None:
            raise NotImplementedError(f"envFrom {source}: only configMapRef is read here")
        env.update(kubernetes_object("ConfigMap", ref["name"]).get("data") or {})
    fields = {"metadata.name": pod, "status.podIP": ip}
    for var in c.get("env") or []:
        if "valueFrom" in var:
            ref = var["valueFrom"].get("fieldRef")
            if ref is None or ref["fieldPath"] not in fields:
                raise NotImplementedError(f"env {var['name']}: {var['valueFrom']} is not "
                                          "filled in by the test bed")
            env[var["name"]] = fields[ref["fieldPath"]]
        else:
            env[var["name"]] = _DEPENDENT.sub(
                lambda m: env.get(m.group(1), m.group(0)), var.get("value", ""))
    return env


def kubernetes_secret_files() -> dict[str, str]:
    """The Secret volumes of the mysql container: file path in the container -> value."""
    c = database_container()
    pod = kubernetes_object("StatefulSet", "mysql")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    out = {}
    for mount in c.get("volumeMounts") or []:
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret is None:
            continue
        assert secret["secretName"] == "autopilot-mysql", secret
        for key, value in KUBERNETES_SECRET.items():
            out[f"{mount['mountPath']}/{key}"] = value
    return out


KUBERNETES = Deployment(
    name="deploy/kubernetes",
    environment=lambda host: kubernetes_environment(host.name, host.ip),
    secret_files=kubernetes_secret_files,
    # StatefulSet pods are named <name>-<ordinal> from 0
    host_name=lambda i: f"mysql-{i - 1}",
    # securityContext.runAsUser: the image's mysql user (this machine's, on the bed)
    user="mysql")


@functools.cache
def stack_model() -> dict[str, Any]:
    """deploy/swarm/stack.yml as compose-go loads it (the interpolation `docker stack deploy`
    does, with no variable set)."""
    model: dict[str, Any] = json.loads(run([tool("dockercheck"), str(STACK_FILE)]).stdout)
    return model


def swarm_environment(slot: int) -> dict[str, str]:
    """The mysql service's environment in task slot `slot` (Swarm fills {{.Task.Slot}})."""
    env = stack_model()["services"]["mysql"]["environment"]
    return {k: v.replace("{{.Task.Slot}}", str(slot)) for k, v in env.items()}


def swarm_secret_files() -> dict[str, str]:
    out = {}
    for s in stack_model()["services"]["mysql"].get("secrets") or []:
        out[s.get("target") or f"/run/secrets/{s['source']}"] = SWARM_SECRETS[s["source"]]
    return out


def _slot(host: Host) -> int:
    return int(host.name.rsplit("-", 1)[1])


SWARM = Deployment(
    name="deploy/swarm",
    environment=lambda host: swarm_environment(_slot(host)),
    secret_files=swarm_secret_files,
    # the task's hostname, "mysql-{{.Task.Slot}}" (slots count from 1)
    host_name=lambda i: f"mysql-{i}")
