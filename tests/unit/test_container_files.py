"""docker/Dockerfile and docker-compose.yml, checked without a Docker engine: parsed by the
reference parsers (BuildKit, compose-go) through tools/dockercheck, and held against the
supervisor's own settings validation."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from autopilot_mysql.config import VARIABLES, load_settings
from tests.testbed.util import REPO, tool

SECRETS = {"MARIADB_ROOT_PASSWORD": "r", "MARIADB_PASSWORD": "a", "MYSQL_REPL_PASSWORD": "p",
           "AWS_SECRET_ACCESS_KEY": "s3-secret"}
ALIASES = {"MYSQL_ROOT_PASSWORD", "MYSQL_DATABASE", "MYSQL_USER", "MYSQL_PASSWORD"}
FILE_VARS = {f"{k}_FILE" for k in VARIABLES} | {"AWS_SECRET_ACCESS_KEY_FILE"}


def dockercheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([tool("dockercheck"), str(REPO / "docker" / "Dockerfile"),
                           str(REPO / "docker-compose.yml")], capture_output=True, text=True,
                          env={**clean, **env}, timeout=60)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    proc = dockercheck(SECRETS)
    assert proc.returncode == 0, proc.stderr
    assert "docker/Dockerfile: 2 stage(s), ok" in proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_compose_environment_is_valid_for_the_supervisor(compose: dict[str, Any],
                                                         tmp_path: Path) -> None:
    env = compose["services"]["mysql"]["environment"]
    assert set(env) <= set(VARIABLES) | ALIASES | FILE_VARS, set(env) - set(VARIABLES)
    # Every secret reaches the container as a compose secret file, none as a variable.
    mounted = {s["target"]: compose["secrets"][s["source"]]["environment"]
               for s in compose["services"]["mysql"]["secrets"]}
    for name in SECRETS:
        assert name not in env, name
        assert env[f"{name}_FILE"] in mounted and mounted[env[f"{name}_FILE"]] == name
    files = {}
    for target, var in mounted.items():  # what Docker mounts at /run/secrets
        (tmp_path / var).write_text(SECRETS[var])
        files[target] = str(tmp_path / var)
    settings = load_settings({**{k: files.get(v, v) for k, v in env.items()},
                              "NODE_NAME": "mysql-1"})
    assert settings.consul_agent and settings.consul_host == "consul"
    assert settings.root_password == "r" and settings.repl_password == "p"
    assert settings.snapshots is not None and settings.snapshots.create_bucket
    assert settings.snapshots.endpoint == "http://minio:9000"
    assert settings.snapshots.secret_key == "s3-secret"
    # The memory limit the buffer pool is sized from (half of it)
    assert compose["services"]["mysql"]["deploy"]["resources"]["limits"]["memory"] == \
        str(1 << 30)
    minio = compose["services"]["minio"]
    assert minio["environment"]["MINIO_ROOT_USER"] == env["AWS_ACCESS_KEY_ID"]
    grace = compose["services"]["mysql"]["stop_grace_period"]
    assert int(grace.rstrip("s")) > settings.stop_timeout  # our stop finishes before SIGKILL


def test_missing_secret_is_refused_by_compose_with_its_name() -> None:
    proc = dockercheck({k: v for k, v in SECRETS.items() if k != "MYSQL_REPL_PASSWORD"})
    assert proc.returncode != 0 and "MYSQL_REPL_PASSWORD" in proc.stderr


def test_dockerfile_entrypoint_volume_and_templates() -> None:
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["autopilot-mysql", "run"]' in text
    assert 'VOLUME ["/var/lib/mysql"]' in text
    copy_etc = re.search(r"COPY etc/ (\S+)", text)
    assert copy_etc and copy_etc.group(1).rstrip("/") == "/etc/autopilot-mysql"
    assert "APM_ETC_DIR=/etc/autopilot-mysql" in text
    assert (REPO / "etc" / "my.cnf.template").exists()
    # The image builds Consul from the same pinned module as the test bed.
    assert "COPY tools/consul/go.mod tools/consul/go.sum tools/consul/main.go" in text


def test_the_healthcheck_is_the_cli_health_command_in_image_and_compose(
        compose: dict[str, Any]) -> None:
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(r'HEALTHCHECK .*\\\n\s+CMD \["autopilot-mysql", "health"\]', text), text
    hc = compose["services"]["mysql"]["healthcheck"]
    assert hc["test"] == ["CMD", "autopilot-mysql", "health"]
    assert "/etc/autopilot-mysql/hooks.d" in text


def test_the_images_own_mysql_directories_pass_the_user_settings_check() -> None:
    """The image keeps Debian's /etc/mysql files but 50-server.cnf (bind-address, pid-file:
    the supervisor's): what is left passes the check a user's conf.d gets (the files the
    Debian package installs are on this machine too)."""
    from pathlib import Path

    from autopilot_mysql.mysql.usercnf import check, read_file
    text = (REPO / "docker" / "Dockerfile").read_text()
    removed = set(re.findall(r"rm -f (/etc/mysql/\S+\.cnf)", text))
    assert removed == {"/etc/mysql/mariadb.conf.d/50-server.cnf"}
    found = []
    for d in (Path("/etc/mysql/conf.d"), Path("/etc/mysql/mariadb.conf.d")):
        for f in sorted(d.glob("*.cnf")):
            if str(f) not in removed:
                found += read_file(f, depth=0)
    assert check(found) == []
    everything = [s for d in ("/etc/mysql/mariadb.conf.d",)
                  for f in sorted(Path(d).glob("*.cnf")) for s in read_file(f, depth=0)]
    assert check(everything), "50-server.cnf sets what the supervisor owns: the rm is needed"


def test_haproxy_service_uses_the_tested_config(compose: dict[str, Any]) -> None:
    hap = compose["services"]["haproxy"]
    mounts = {v["source"]: v["target"] for v in hap["volumes"]}
    assert mounts[str(REPO / "etc" / "haproxy.cfg")] == "/usr/local/etc/haproxy/haproxy.cfg"
    env = hap["environment"]
    assert env["CONSUL_DNS"] == "consul:8600" and env["SERVICE_NAME"] == "mysql"
    assert {p["target"] for p in hap["ports"]} == {3306, 3307, 8404}


def test_the_router_pair_profile_builds_on_the_tested_files() -> None:
    """`--profile ha-router` (issue 12): a second HAProxy with the same config, keepalived
    beside each in its network namespace with the capabilities VRRP needs, one image built
    from docker/keepalived (parsed by BuildKit's parser too); without the profile, the two
    extra services are not part of the project."""
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    proc = subprocess.run(
        [tool("dockercheck"), str(REPO / "docker" / "keepalived" / "Dockerfile"),
         str(REPO / "docker-compose.yml")], capture_output=True, text=True, timeout=60,
        env={**clean, **SECRETS, "COMPOSE_PROFILES": "ha-router", "ROUTER_VIP": "172.30.57.250"})
    assert proc.returncode == 0, proc.stderr
    assert "docker/keepalived/Dockerfile: 1 stage(s), ok" in proc.stderr
    svc = json.loads(proc.stdout)["services"]
    assert svc["haproxy-b"]["volumes"] == svc["haproxy"]["volumes"]
    assert svc["haproxy-b"]["environment"] == svc["haproxy"]["environment"]
    pair = [svc["keepalived-a"], svc["keepalived-b"]]
    assert [k["network_mode"] for k in pair] == ["service:haproxy", "service:haproxy-b"]
    assert all({"NET_ADMIN", "NET_RAW"} <= set(k["cap_add"]) for k in pair)
    assert {k["environment"]["ROUTER_VIP"] for k in pair} == {"172.30.57.250"}
    assert len({k["environment"]["VRRP_PRIORITY"] for k in pair}) == 2
    assert pair[0]["build"]["dockerfile"] == "docker/keepalived/Dockerfile"
    plain = dockercheck(SECRETS)
    assert not {"haproxy-b", "keepalived-a"} & set(json.loads(plain.stdout)["services"])


def test_the_keepalived_entrypoint_refuses_to_start_without_its_address(tmp_path: Path) -> None:
    proc = subprocess.run(["sh", str(REPO / "docker" / "keepalived" / "entrypoint.sh")],
                          env={"PATH": os.environ["PATH"], "VRRP_PRIORITY": "100",
                               "KEEPALIVED_RUNDIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode != 0 and "set ROUTER_VIP" in proc.stderr, proc.stderr
    assert not (tmp_path / "keepalived.conf").exists()
