"""The Consul transport's own parsing (consul_http.HTTPClient), over a socket pair: the forms of
answer an HTTP/1.1 server may give (chunked, close-delimited), a connection closed before or
during an answer, and requests it refuses to send. Against a real agent:
tests/integration/test_supervisor.py::test_the_consul_transport_against_a_real_agent."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from autopilot_mysql.consul_http import Disconnected, HTTPClient


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(5)
    yield a, b
    a.close()
    b.close()


def test_a_chunked_answer_is_read_whole_and_its_headers_in_any_case(
        pair: tuple[socket.socket, socket.socket]) -> None:
    ours, agent = pair
    agent.sendall(b"HTTP/1.1 200 OK\r\nX-Consul-Index: 42\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    (status, headers, body), keep = HTTPClient._read(ours)
    assert (status, body, keep) == (200, b"hello world", True)
    assert headers["X-Consul-Index"] == headers["x-consul-index"] == "42"
    assert "X-CONSUL-INDEX" in headers and headers.get("Nope", "-") == "-"


def test_an_answer_split_across_reads_and_one_that_closes(
        pair: tuple[socket.socket, socket.socket]) -> None:
    ours, agent = pair
    agent.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    assert HTTPClient._read(ours) == ((200, {"content-length": "2"}, b"{}"), True)
    agent.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Len")
    agent.sendall(b"gth: 2\r\nConnection: close\r\n\r\n[]")
    (status, _, body), keep = HTTPClient._read(ours)
    assert (status, body, keep) == (404, b"[]", False)


def test_a_body_that_ends_with_the_connection(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, agent = pair
    agent.sendall(b"HTTP/1.0 200 OK\r\n\r\nall of it")
    agent.shutdown(socket.SHUT_WR)
    (status, _, body), keep = HTTPClient._read(ours)
    assert (status, body, keep) == (200, b"all of it", False)


def test_a_connection_closed_before_or_during_an_answer(
        pair: tuple[socket.socket, socket.socket]) -> None:
    ours, agent = pair
    agent.shutdown(socket.SHUT_WR)
    with pytest.raises(Disconnected):  # retried once on a fresh connection when it was reused
        HTTPClient._read(ours)
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        b.shutdown(socket.SHUT_WR)
        with pytest.raises(ConnectionError) as err:
            HTTPClient._read(a)
        assert not isinstance(err.value, Disconnected) and "mid-answer" in str(err.value)


def test_a_request_with_a_line_break_or_a_space_is_never_sent() -> None:
    c = HTTPClient("127.0.0.1", 1, "http", True, None, timeout=1, token="t\r\nX-Evil: 1")
    with pytest.raises(ConnectionError, match="CONSUL_HTTP_TOKEN"):
        c._request("GET", "/v1/kv/a", None, b"", None)
    c = HTTPClient("127.0.0.1", 1, "http", True, None, timeout=1)
    with pytest.raises(ConnectionError, match="line break or a space"):
        c._message("GET", "/v1/kv/a b", b"", {})  # py-consul quotes paths: a last guard
    msg = c._message("PUT", "/v1/txn", b"[]", {"X-Consul-Token": "t"})
    assert msg == (b"PUT /v1/txn HTTP/1.1\r\nHost: 127.0.0.1:1\r\nX-Consul-Token: t\r\n"
                   b"Content-Length: 2\r\n\r\n[]")
    assert HTTPClient("::1", 80, "http", True, None, timeout=1).host_header == "[::1]"
