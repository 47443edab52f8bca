"""Consul as people run it in production: ACLs that deny by default, a gossip encryption
key, https with a CA of its own. The nodes carry the token on every call (the raw
transactions and session creates included), their local agents join with the key, a node
speaks https to the server straight; a node without a token is told why it cannot start."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid

import pytest
import requests

from tests.testbed.bed import TestBed
from tests.testbed.cluster import boot_cluster, make_node
from tests.testbed.util import tool, wait_until

pytestmark = pytest.mark.integration


def test_acl_token_gossip_key_and_https(bed: TestBed) -> None:
    token = str(uuid.uuid4())
    key = base64.b64encode(os.urandom(32)).decode()
    certs = bed.root / "consul-tls"
    certs.mkdir()
    # A CA of its own, and a server certificate for the name the nodes use (consul).
    run = {"cwd": certs, "check": True, "capture_output": True, "timeout": 60}
    subprocess.run([tool("consul"), "tls", "ca", "create", "-days", "2"], **run)  # type: ignore[call-overload]
    subprocess.run([tool("consul"), "tls", "cert", "create", "-server", "-dc", "dc1",
                    "-days", "2", "-additional-dnsname", "consul"], **run)  # type: ignore[call-overload]
    ca = certs / "consul-agent-ca.pem"
    extra = {
        "encrypt": key,
        "acl": {"enabled": True, "default_policy": "deny", "enable_token_persistence": True,
                "tokens": {"initial_management": token, "agent": token}},
        "ports": {"grpc": -1, "grpc_tls": -1, "https": 8501},
        "tls": {"defaults": {"ca_file": str(ca),
                             "cert_file": str(certs / "dc1-server-consul-0.pem"),
                             "key_file": str(certs / "dc1-server-consul-0-key.pem"),
                             "verify_incoming": False, "verify_outgoing": False}},
    }
    nodes = boot_cluster(bed, 2, consul_extra=extra, consul_token=token,
                         CONSUL_HTTP_TOKEN=token, CONSUL_ENCRYPT=key)
    consul_ip = bed.hosts["consul"].ip
    # Anonymous: denied. The cluster's keys exist and were written with the token.
    kv = f"http://{consul_ip}:8500/v1/kv/service/mysql/leader"
    assert requests.get(kv, timeout=3).status_code == 403
    r = requests.get(kv, headers={"X-Consul-Token": token}, timeout=3)
    assert r.ok and json.loads(base64.b64decode(r.json()[0]["Value"]))["node"] in (
        nodes[0].name, nodes[1].name)
    # A third node speaks https to the server straight (no local agent), verified by the CA.
    db3 = make_node(bed.add_host("db3"), CONSUL_AGENT="false", CONSUL="https://consul:8501",
                    CONSUL_CACERT=str(ca), CONSUL_HTTP_TOKEN=token)
    db3.boot()
    db3.wait_http("/replica", 200, timeout=90)
    # A node without a token is told why it cannot start, and what to set.
    db4 = make_node(bed.add_host("db4"), CONSUL_AGENT="false", CONSUL="https://consul:8501",
                    CONSUL_CACERT=str(ca))
    db4.boot()
    wait_until(lambda: "set CONSUL_HTTP_TOKEN" in db4.log.read_text(), timeout=60,
               what="db4 to name the missing token")
    assert "permission denied" in db4.log.read_text().lower()
    # And one whose CA is not Consul's is told to set CONSUL_CACERT.
    db5 = make_node(bed.add_host("db5"), CONSUL_AGENT="false", CONSUL="https://consul:8501",
                    CONSUL_HTTP_TOKEN=token)
    db5.boot()
    wait_until(lambda: "CONSUL_CACERT" in db5.log.read_text(), timeout=60,
               what="db5 to name the CA it lacks")
