"""The HTTP role/health table, served from a real socket on loopback."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from autopilot_mysql.api import HealthServer, switchover_refusal
from autopilot_mysql.model import NodeStatus, ProcState, Role

NOW = [100.0]
STATUS = [NodeStatus(node="db1")]


CALLS: list[tuple[str, dict[str, str]]] = []


def control(action: str, params: dict[str, str]) -> tuple[int, str]:
    CALLS.append((action, params))
    return 202, "requested"


@pytest.fixture
def server() -> Iterator[HealthServer]:
    srv = HealthServer(0, lambda: STATUS[0], stale_after=5, host="127.0.0.1",
                       clock=lambda: NOW[0], control=control, token="t" * 20)
    srv.start()
    yield srv
    srv.stop()


def get(srv: HealthServer, path: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.httpd.server_address[1], timeout=3)
    conn.request(method, path, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read()


def codes(srv: HealthServer) -> dict[str, int]:
    return {p: get(srv, p)[0] for p in ("/health", "/liveness", "/readiness", "/primary",
                                        "/replica")}


def test_primary_replica_and_unhealthy(server: HealthServer) -> None:
    STATUS[0] = NodeStatus(node="db1", role=Role.PRIMARY, healthy=True, writable=True,
                           mysqld=ProcState.RUNNING, cycle_at=99.5, lock_valid_until=101.0)
    assert codes(server) == {"/health": 200, "/liveness": 200, "/readiness": 200,
                             "/primary": 200, "/replica": 503}
    STATUS[0] = NodeStatus(node="db1", role=Role.REPLICA, healthy=True, cycle_at=99.5,
                           replicating=True, lag=3)
    assert codes(server)["/primary"] == 503 and codes(server)["/replica"] == 200
    assert get(server, "/replica?lag=2")[0] == 503 and get(server, "/replica?lag=3")[0] == 200
    assert get(server, "/replica?lag=soon")[0] == 503
    STATUS[0] = NodeStatus(node="db1", role=Role.REPLICA, healthy=True, cycle_at=99.5,
                           replicating=True, lag=11)
    assert codes(server)["/replica"] == 503  # default limit 10 s
    # A read-only node that does not replicate must not receive reads.
    STATUS[0] = NodeStatus(node="db1", role=Role.REPLICA, healthy=True, cycle_at=99.5)
    assert codes(server)["/replica"] == 503
    STATUS[0] = NodeStatus(node="db1", healthy=False, cycle_at=99.5, last_error="mysqld down")
    c = codes(server)
    assert c["/health"] == 503 and c["/liveness"] == 200
    assert b"mysqld down" in get(server, "/health")[1]


def test_primary_fails_once_the_lock_may_have_passed(server: HealthServer) -> None:
    # A fresh snapshot (the cycle resumed from SIGSTOP finished publishing pre-pause facts)
    # that still says "primary, writable", but the last renewal is older than FENCE_AFTER.
    STATUS[0] = NodeStatus(node="db1", role=Role.PRIMARY, healthy=True, writable=True,
                           mysqld=ProcState.RUNNING, cycle_at=99.9, lock_valid_until=99.0)
    code, body = get(server, "/primary")
    assert code == 503 and b"not renewed in time" in body
    assert get(server, "/health")[0] == 200  # the node itself is fine: only the role is not


def test_stalled_loop_fails_every_check(server: HealthServer) -> None:
    STATUS[0] = NodeStatus(node="db1", role=Role.PRIMARY, healthy=True, writable=True,
                           cycle_at=90.0)
    assert set(codes(server).values()) == {503}


def test_head_and_status_json_without_secrets(server: HealthServer) -> None:
    STATUS[0] = NodeStatus(node="db1", role=Role.PRIMARY, healthy=True, writable=True,
                           cycle_at=99.9, started_at=40.0, gtid_current_pos="0-1-5")
    code, body = get(server, "/health", "HEAD")
    assert code == 200 and body == b""
    code, body = get(server, "/status")
    doc = json.loads(body)
    assert code == 200 and doc["role"] == "primary" and doc["gtid_current_pos"] == "0-1-5"
    assert doc["uptime_seconds"] == 60.0
    assert "password" not in body.decode().lower()
    assert get(server, "/nope")[0] == 404


def test_switchover_needs_the_token_and_only_publishes(server: HealthServer) -> None:
    CALLS.clear()
    assert get(server, "/switchover?to=db2", "POST")[0] == 401
    bad = {"Authorization": "Bearer wrong"}
    assert get(server, "/switchover?to=db2", "POST", bad)[0] == 401
    good = {"Authorization": "Bearer " + "t" * 20}
    assert get(server, "/switchover?to=db2", "POST", good)[0] == 202
    assert CALLS == [("switchover", {"to": "db2"})]
    assert get(server, "/other", "POST", good)[0] == 404


def test_control_is_disabled_without_a_token() -> None:
    srv = HealthServer(0, lambda: STATUS[0], stale_after=5, host="127.0.0.1", control=control)
    srv.start()
    try:
        code, body = get(srv, "/switchover", "POST", {"Authorization": "Bearer x"})
        assert code == 403 and b"API_TOKEN" in body
    finally:
        srv.stop()


def test_slow_clients_never_hold_up_the_health_check(server: HealthServer) -> None:
    """More clients that connect and send nothing than there are request slots: /health
    still answers at once, and the silent ones are dropped after the request timeout
    instead of holding a thread each."""
    import socket
    import time

    from autopilot_mysql import api

    STATUS[0] = NodeStatus(node="db1", healthy=True, cycle_at=NOW[0])
    port = server.httpd.server_address[1]
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(api.MAX_REQUESTS * 3)]
    try:
        t0 = time.monotonic()
        code, _ = get(server, "/health")
        assert code == 200 and time.monotonic() - t0 < 0.5
        idle[0].settimeout(api.REQUEST_TIMEOUT + 2)
        t0 = time.monotonic()
        assert idle[0].recv(100) == b""  # closed by the server, unanswered
        assert time.monotonic() - t0 < api.REQUEST_TIMEOUT + 1
    finally:
        for s in idle:
            s.close()


def test_switchover_refusals_name_the_reason() -> None:
    kw = {"members": {"db1", "db2"}, "service": "mysql", "role": "writer"}
    assert switchover_refusal(leader=None, to="", **kw) == (  # type: ignore[arg-type]
        409, "there is no writer to switch over from")
    assert switchover_refusal(leader="db1", to="db9", **kw) == (  # type: ignore[arg-type]
        404, "db9 is not a member of mysql")
    assert switchover_refusal(leader="db1", to="db1", **kw) == (  # type: ignore[arg-type]
        409, "db1 is already the writer")
    assert switchover_refusal(leader="db1", to="db2", **kw) is None  # type: ignore[arg-type]
    assert switchover_refusal(leader="db1", to="", **kw) is None  # type: ignore[arg-type]
    code, text = switchover_refusal(leader="db1", to="db2", nofailover={"db2"},
                                    **kw)  # type: ignore[arg-type,misc]
    assert code == 409 and "NOFAILOVER" in text


def workers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads the HTTP server starts from now on (a worker per request the
    gate does not answer itself)."""
    import threading
    started: list[str] = []
    real = threading.Thread

    def counted(*args: Any, **kwargs: Any) -> threading.Thread:
        started.append(str(kwargs.get("name")))
        return real(*args, **kwargs)

    monkeypatch.setattr("autopilot_mysql.api.threading.Thread", counted)
    return started


def test_plain_gets_are_answered_by_the_gate_and_the_rest_by_a_worker(
        server: HealthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Consul's and HAProxy's checks, and /status, are answered without a thread (idle cost);
    what is not a whole plain GET (a body, a request cut in two) still gets its answer."""
    import socket

    from autopilot_mysql.api import _simple_get
    assert _simple_get(b"GET /primary?lag=3 HTTP/1.0\r\nHost: x\r\n\r\n") == ("/primary?lag=3",
                                                                             "GET")
    assert _simple_get(b"HEAD /health HTTP/1.1\r\n\r\n") == ("/health", "HEAD")
    assert _simple_get(b"GET /health HTTP/1.1\r\nHost: x\r\n") is None  # headers not all in
    assert _simple_get(b"POST /switchover HTTP/1.1\r\n\r\n") is None
    assert _simple_get(b"GET /health HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc") is None
    STATUS[0] = NodeStatus(node="db1", role=Role.PRIMARY, healthy=True, writable=True,
                           cycle_at=99.9, lock_valid_until=101.0)
    started = workers(monkeypatch)
    assert get(server, "/primary")[0] == 200 and get(server, "/replica")[0] == 503
    assert started == []  # no worker thread was started
    port = server.httpd.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=3) as c:  # cut in two
        c.sendall(b"GET /primary HTTP/1.0\r\n")
        import time
        time.sleep(0.1)
        c.sendall(b"Host: x\r\n\r\n")
        reply = b""
        while chunk := c.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.0 200") and b"primary OK" in reply
    assert started == ["http-request"]


def test_metrics_parse_as_prometheus_text() -> None:
    """GET /metrics, read back with prometheus_client's own parser: the node's series, the
    cluster's from the callback, and a Consul that did not answer leaves them out."""
    from prometheus_client.parser import text_string_to_metric_families
    cluster: list[dict[str, float] | None] = [{"binlog_archive_complete_age_seconds": 4.5,
                                               "snapshot_last_bad": 0.0, "promotions": 3.0}]
    srv = HealthServer(0, lambda: STATUS[0], stale_after=5, host="127.0.0.1",
                       clock=lambda: NOW[0], metrics=lambda: cluster[0])
    srv.start()
    try:
        STATUS[0] = NodeStatus(node="db1", role=Role.PRIMARY, healthy=True, writable=True,
                               mysqld=ProcState.RUNNING, cycle_at=99.5, lock_valid_until=101.0,
                               consul_ok=True, disk_free=1 << 30, paused="paused by ops",
                               mysqld_exits=2)

        def scrape() -> dict[str, list[tuple[dict[str, str], float]]]:
            code, body = get(srv, "/metrics")
            assert code == 200
            return {f.name: [(s.labels, s.value) for s in f.samples]
                    for f in text_string_to_metric_families(body.decode())}

        m = scrape()
        assert ({"role": "primary"}, 1.0) in m["autopilot_mysql_role"]
        assert ({"role": "replica"}, 0.0) in m["autopilot_mysql_role"]
        assert m["autopilot_mysql_writable"] == [({}, 1.0)]
        assert m["autopilot_mysql_lock_held"] == [({}, 1.0)]
        assert m["autopilot_mysql_disk_free_bytes"] == [({}, float(1 << 30))]
        assert m["autopilot_mysql_binlog_archive_complete_age_seconds"] == [({}, 4.5)]
        assert m["autopilot_mysql_cluster_scrape_ok"] == [({}, 1.0)]
        assert m["autopilot_mysql_paused"] == [({}, 1.0)]
        assert m["autopilot_mysql_mysqld_exits"] == [({}, 2.0)]  # a counter (_total)
        assert m["autopilot_mysql_promotions"] == [({}, 3.0)]
        assert m["autopilot_mysql_consul_unreachable_seconds"] == [({}, 0.0)]
        NOW[0] = 102.0  # past the lease: neither writable nor holding the lock
        m = scrape()
        assert m["autopilot_mysql_writable"] == [({}, 0.0)]
        assert m["autopilot_mysql_lock_held"] == [({}, 0.0)]
        cluster[0] = None
        m = scrape()
        assert m["autopilot_mysql_cluster_scrape_ok"] == [({}, 0.0)]
        assert "autopilot_mysql_binlog_archive_complete_age_seconds" not in m
    finally:
        NOW[0] = 100.0
        srv.stop()


def test_patroni_paths_and_options_answer_as_patroni_does(
        server: HealthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """HAProxy configurations written for Patroni (`option httpchk OPTIONS /primary`, the
    /read-only pool, /sync) work unchanged: the same codes, OPTIONS like HEAD, inline."""

    from autopilot_mysql.api import _simple_get
    assert _simple_get(b"OPTIONS /primary HTTP/1.0\r\n\r\n") == ("/primary", "OPTIONS")
    paths = ("/", "/read-write", "/leader", "/read-only", "/sync", "/synchronous", "/async",
             "/asynchronous")
    STATUS[0] = NodeStatus(node="db1", role=Role.PRIMARY, healthy=True, writable=True,
                           mysqld=ProcState.RUNNING, cycle_at=99.5, lock_valid_until=101.0)
    started = workers(monkeypatch)
    assert {p: get(server, p, "OPTIONS") for p in paths} == {
        "/": (200, b""), "/read-write": (200, b""), "/leader": (200, b""),
        "/read-only": (200, b""), "/sync": (503, b""), "/synchronous": (503, b""),
        "/async": (503, b""), "/asynchronous": (503, b"")}
    assert started == []  # answered by the gate
    # Holding the lock's lease but not writable (opening): the leader, not the primary.
    STATUS[0] = replace(STATUS[0], writable=False)
    assert get(server, "/leader", "OPTIONS")[0] == 200 and get(server, "/", "OPTIONS")[0] == 503
    # A replica in the acknowledgement set, then one outside it.
    STATUS[0] = NodeStatus(node="db1", role=Role.REPLICA, healthy=True, cycle_at=99.5,
                           replicating=True, lag=0, ack_set={"this_node_is_member": True})
    got = {p: get(server, p)[0] for p in paths}
    assert got == {"/": 503, "/read-write": 503, "/leader": 503, "/read-only": 200,
                   "/sync": 200, "/synchronous": 200, "/async": 503, "/asynchronous": 503}
    STATUS[0] = replace(STATUS[0], ack_set={"this_node_is_member": False})
    assert get(server, "/async")[0] == 200 and get(server, "/sync")[0] == 503
    assert get(server, "/read-only?lag=-1")[0] == 503  # lag honoured, as on /replica


def test_cluster_and_history_come_from_the_callback_and_say_when_consul_is_down() -> None:
    from autopilot_mysql.exceptions import DCSError
    answers: dict[str, object] = {"cluster": {"members": []}, "history": [{"kind": "x"}]}

    def cluster(what: str) -> object:
        if answers.get("down"):
            raise DCSError("Consul at 127.0.0.1:8500: cluster keys read failed: refused")
        return answers[what]

    srv = HealthServer(0, lambda: STATUS[0], stale_after=5, host="127.0.0.1",
                       clock=lambda: NOW[0], cluster=cluster)
    srv.start()
    try:
        code, body = get(srv, "/cluster")
        assert code == 200 and json.loads(body) == {"members": []}
        code, body = get(srv, "/history")
        assert code == 200 and json.loads(body) == [{"kind": "x"}]
        answers["down"] = True
        code, body = get(srv, "/cluster")
        assert code == 503 and b"refused" in body and b"Consul" in body
    finally:
        srv.stop()


def test_a_noloadbalance_replica_is_out_of_the_read_pool(server: HealthServer) -> None:
    STATUS[0] = NodeStatus(node="db1", role=Role.REPLICA, healthy=True, cycle_at=99.5,
                           replicating=True, lag=0, tags=("noloadbalance",))
    for path in ("/replica", "/read-only", "/async"):
        code, body = get(server, path)
        assert code == 503 and b"NOLOADBALANCE" in body, (path, body)
    assert get(server, "/health")[0] == 200


def test_the_health_command_exits_as_docker_expects(server: HealthServer,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from autopilot_mysql.cli import main
    url = f"http://127.0.0.1:{server.httpd.server_address[1]}"
    STATUS[0] = NodeStatus(node="db1", role=Role.REPLICA, healthy=True, cycle_at=99.5)
    assert main(["health", "--url", url]) == 0
    STATUS[0] = NodeStatus(node="db1", healthy=False, cycle_at=99.5, last_error="mysqld down")
    assert main(["health", "--url", url]) == 1
    assert "mysqld down" in capsys.readouterr().out
    assert main(["health", "--url", "http://127.0.0.1:1"]) == 1
    assert "does not answer" in capsys.readouterr().out
