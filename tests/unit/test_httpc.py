"""httpc, the supervisor's HTTP client (calls between nodes, and the Consul transport's
connections), against a real server on loopback and over a socket pair (the forms of answer
an HTTP/1.1 server may give, a connection closed before or during an answer, requests it
refuses to write); and the supervisor's imports, which must leave requests out (8 MiB for its
whole life). Against a real Consul agent:
tests/integration/test_supervisor.py::test_the_consul_transport_against_a_real_agent."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from autopilot_mysql import httpc


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the nodes' API
    seen: list[tuple[str, str, bytes, str]] = []

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"path": self.path}).encode()
        self.seen.append(("GET", self.path, b"", str(self.client_address[1])))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        got = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("POST", self.path, got, self.headers.get("X-Sig", "")))
        body = b"refused: not the primary\n"
        self.send_response(409)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Handler.seen = []
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_get_post_and_a_kept_alive_connection(server: int) -> None:
    r = httpc.request("GET", f"http://127.0.0.1:{server}/status?x=1", timeout=2)
    assert r.ok and r.json() == {"path": "/status?x=1"}
    r = httpc.request("POST", f"http://127.0.0.1:{server}/failsafe", body=b"{}",
                      headers={"X-Sig": "abc"}, timeout=2)
    assert (r.status, r.ok, r.text) == (409, False, "refused: not the primary\n")
    assert Handler.seen[-1] == ("POST", "/failsafe", b"{}", "abc")
    conn = httpc.Connection("127.0.0.1", server, 2)
    assert conn.request("GET", "/a").ok and conn.request("GET", "/b").ok
    ports = {p for m, path, _, p in Handler.seen if path in ("/a", "/b")}
    assert len(ports) == 1, "the poller's connection was not kept alive"
    conn.close()


def test_failures_are_oserrors() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        httpc.request("GET", f"http://127.0.0.1:{port}/status", timeout=1)
    # something that answers, but not HTTP
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def garbage() -> None:
        c, _ = srv.accept()
        c.recv(1024)
        c.sendall(b"SSH-2.0-OpenSSH\r\n")
        c.close()
    threading.Thread(target=garbage, daemon=True).start()
    with pytest.raises(OSError):
        httpc.request("GET", f"http://127.0.0.1:{srv.getsockname()[1]}/", timeout=2)
    srv.close()
    with pytest.raises(ValueError):
        httpc.request("GET", "https://127.0.0.1/", timeout=1)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(5)
    yield a, b
    a.close()
    b.close()


def test_a_chunked_answer_is_read_whole_and_its_headers_in_any_case(
        pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    peer.sendall(b"HTTP/1.1 200 OK\r\nX-Consul-Index: 42\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    r, keep = httpc.read_response(ours)
    assert (r.status, r.body, keep) == (200, b"hello world", True)
    assert r.headers["X-Consul-Index"] == r.headers["x-consul-index"] == "42"
    assert "X-CONSUL-INDEX" in r.headers and r.headers.get("Nope", "-") == "-"


def test_answers_split_across_reads_and_one_that_closes(
        pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    r, keep = httpc.read_response(ours)
    assert (r.status, r.body, dict(r.headers), keep) == (200, b"{}", {"content-length": "2"},
                                                         True)
    peer.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Len")
    peer.sendall(b"gth: 2\r\nConnection: close\r\n\r\n[]")
    r, keep = httpc.read_response(ours)
    assert (r.status, r.body, keep) == (404, b"[]", False)


def test_a_body_that_ends_with_the_connection(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    peer.sendall(b"HTTP/1.0 200 OK\r\n\r\nall of it")
    peer.shutdown(socket.SHUT_WR)
    r, keep = httpc.read_response(ours)
    assert (r.status, r.body, keep) == (200, b"all of it", False)


def test_a_connection_closed_before_or_during_an_answer(
        pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    peer.shutdown(socket.SHUT_WR)
    with pytest.raises(httpc.Disconnected):  # retried once, fresh, when it was reused
        httpc.read_response(ours)
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        b.shutdown(socket.SHUT_WR)
        with pytest.raises(httpc.HTTPFailure) as err:
            httpc.read_response(a)
        assert not isinstance(err.value, httpc.Disconnected) and "mid-answer" in str(err.value)


def test_a_kept_connection_the_server_let_go_is_replaced() -> None:
    """A kept-alive connection the server closed while idle is seen before it is used; one it
    closes without answering once reused is tried again, once, on a fresh connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    answered: list[int] = []

    def answer(c: socket.socket) -> None:
        c.recv(4096)
        answered.append(len(answered))
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"
                  + str(answered[-1]).encode())

    def serve() -> None:
        c, _ = srv.accept()
        answer(c)
        c.close()  # idle close: seen before the next request
        c, _ = srv.accept()
        answer(c)
        c.recv(4096)  # the next request on it: read, then hung up on
        c.close()
        c, _ = srv.accept()
        answer(c)
        c.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    conn = httpc.Connection("127.0.0.1", srv.getsockname()[1], 2)
    assert conn.request("GET", "/").body == b"0"
    time.sleep(0.2)
    assert conn.request("GET", "/").body == b"1"
    assert conn.request("GET", "/").body == b"2"
    conn.close()
    t.join(5)
    srv.close()


def test_a_request_with_a_line_break_or_a_space_is_never_sent() -> None:
    with pytest.raises(httpc.HTTPFailure, match="line break"):
        httpc.message("GET", "/v1/kv/a", "h", b"", {"X-Consul-Token": "t\r\nX-Evil: 1"})
    with pytest.raises(httpc.HTTPFailure, match="a space"):
        httpc.message("GET", "/v1/kv/a b", "h", b"", {})
    assert httpc.message("PUT", "/v1/txn", "127.0.0.1:1", b"[]", {"X-Consul-Token": "t"}) == (
        b"PUT /v1/txn HTTP/1.1\r\nHost: 127.0.0.1:1\r\nX-Consul-Token: t\r\n"
        b"Content-Length: 2\r\n\r\n[]")
    assert httpc.Connection("::1", 80, 1).host_header == "[::1]"
    from autopilot_mysql.consul_http import HTTPClient
    c = HTTPClient("127.0.0.1", 1, "http", True, None, timeout=1, token="t\nX-Evil: 1")
    with pytest.raises(OSError, match="line break"):  # dcs turns it into a DCSError
        c._request("GET", "/v1/kv/a", None, b"", None)


def test_the_supervisor_imports_neither_requests_nor_urllib3() -> None:
    code = ("import sys; import autopilot_mysql.daemon, autopilot_mysql.galera_node; "
            "print(sorted(m for m in ('requests', 'urllib3', 'consul.std', 'boto3') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]", out


def test_the_supervisor_loads_ssl_only_at_its_first_use() -> None:
    """cli._lean (the `supervise` path): ssl, argparse and urllib.request stay out of the
    supervisor's import set; ssl is still there for whoever reads it, from any thread."""
    code = """
import sys, threading
from autopilot_mysql import cli
cli._lean()
import autopilot_mysql.daemon, autopilot_mysql.galera_node, http.client, pymysql.connections
print(sorted(m for m in ('_ssl', 'argparse', 'urllib.request') if m in sys.modules))
import ssl
holders = [ssl, pymysql.connections.ssl]
got = []
def first_use(): got.append(holders[len(got) % 2].SSLError)
threads = [threading.Thread(target=first_use) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
import _ssl
print(len(set(got)), got[0] is _ssl.SSLError, hasattr(http.client, 'HTTPSConnection'),
      ssl.create_default_context().verify_mode == ssl.CERT_REQUIRED,
      sys.modules['ssl'].PROTOCOL_TLS_CLIENT == ssl.PROTOCOL_TLS_CLIENT)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    assert out == ["[]", "1 True True True True"], out


def test_a_tls_failure_of_consul_names_the_ca_setting_and_no_other_failure_does() -> None:
    import ssl

    from autopilot_mysql.dcs import Consul
    from autopilot_mysql.exceptions import DCSError

    def fails(exc: Exception) -> Callable[[], None]:
        def call() -> None:
            raise exc
        return call

    tls = Consul("127.0.0.1", 8501, "mysql", scheme="https", verify=False)
    with pytest.raises(DCSError, match="TLS error .*CONSUL_CACERT"):
        tls._call("kv get", fails(ssl.SSLCertVerificationError("self-signed certificate")))
    with pytest.raises(DCSError, match="kv get failed: .*refused") as refused:
        tls._call("kv get", fails(ConnectionRefusedError("refused")))
    assert "CONSUL_CACERT" not in str(refused.value)
    plain = Consul("127.0.0.1", 8500, "mysql")
    with pytest.raises(DCSError, match="kv get failed: .*refused"):
        plain._call("kv get", fails(ConnectionRefusedError("refused")))
