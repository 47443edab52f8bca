"""The supervisor's HTTP client: a peer's /status, the failsafe's confirmation, and the
Consul transport's connections (consul_http.py). A kept-alive socket; requests are written
here, answers parsed by httptools (llhttp, Node.js's HTTP parser, also uvicorn's).

Why not the standard library or requests: the supervisor calls its Consul agent every cycle
on every node, and a primary polls each replica's /status every second, for the container's
whole life; on an idle node each call comes after a sleep, with cold caches. One heartbeat
transaction against a local agent, 0.5 s apart, cost 0.62-0.67 ms of CPU through
http.client and 0.19 ms here (back to back: 0.12-0.16 ms and 0.03 ms); requests, with urllib3
and charset_normalizer, also held 8 MiB in every container (bench/supervisor.py).

Every failure is an OSError (refused, timed out, TLS, a broken answer: HTTPFailure) or, for
a body that is not JSON, a ValueError."""

from __future__ import annotations

import json
import re
import select
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httptools

if TYPE_CHECKING:
    import ssl


class HTTPFailure(OSError):
    """The peer answered something that is not HTTP, hung up mid-answer, or the request
    could not be written as asked."""


class Disconnected(HTTPFailure, ConnectionError):
    """The peer closed the connection before answering (a kept-alive one it let go)."""


class Headers(dict[str, str]):
    """An answer's headers, looked up in any case (py-consul asks for X-Consul-Index)."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return super().__contains__(str(name).lower())


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Headers = field(default_factory=Headers)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


_BAD_TARGET = re.compile("[\x00-\x20\x7f]")  # what http.client refuses in a URL too


def message(method: str, target: str, host: str, body: bytes,
            headers: dict[str, str]) -> bytes:
    """One HTTP/1.1 request. A line break in a header (a token, say) would smuggle another
    header or request, and a space or control character in the target breaks the request
    line: HTTPFailure, nothing written."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("PUT", "POST", "DELETE"):
        lines.append(f"Content-Length: {len(body)}")
    if any(c in line for line in lines for c in "\r\n\0") or _BAD_TARGET.search(target):
        raise HTTPFailure(f"{method} {target.split('?')[0]!r}: refused to send a request line "
                          "or header with a line break or a space in it (check the token "
                          "and the names in it)")
    return "\r\n".join(lines).encode("latin-1", "replace") + b"\r\n\r\n" + body


class _Answer:
    """httptools' callbacks for one answer."""

    def __init__(self) -> None:
        self.headers = Headers()
        self.body: list[bytes] = []
        self.headers_done = False
        self.done = False
        self.keep = False  # the connection may carry the next request
        self.parser: Any = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True
        # Asked here: once the message is done, the parser has reset and says False.
        self.keep = bool(self.parser.should_keep_alive())


def read_response(sock: socket.socket) -> tuple[Response, bool]:
    """One answer from `sock`, and whether the connection may carry the next request."""
    answer = _Answer()
    parser = answer.parser = httptools.HttpResponseParser(answer)
    got = False
    try:
        while not answer.done:
            data = sock.recv(65536)
            if not data:
                if answer.headers_done and "content-length" not in answer.headers \
                        and "transfer-encoding" not in answer.headers:
                    # A body that ends with the connection (HTTP/1.0 style): all of it.
                    return Response(parser.get_status_code(), b"".join(answer.body),
                                    answer.headers), False
                if not got:
                    raise Disconnected("the connection was closed without an answer")
                raise HTTPFailure("the connection was closed mid-answer")
            got = True
            parser.feed_data(data)
    except httptools.HttpParserError as exc:
        raise HTTPFailure(f"not an HTTP answer: {exc}") from exc
    return Response(parser.get_status_code(), b"".join(answer.body), answer.headers), \
        answer.keep


class Connection:
    """One host's kept-alive connection, for a thread that asks it again and again (a
    peer's poller, a thread's Consul calls): reopened after any failure, and once, on a
    fresh connection, when the host let a kept-alive one go just as we reused it.
    `context`: TLS (https)."""

    def __init__(self, host: str, port: int, timeout: float,
                 context: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.timeout, self.context = host, int(port), timeout, context
        name = f"[{host}]" if ":" in host else host
        default = 443 if context is not None else 80
        self.host_header = name if self.port == default else f"{name}:{self.port}"
        self._sock: socket.socket | None = None
        self._used = False  # the socket carried an answer already

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float | None = None
                ) -> Response:
        """`timeout`: for this request, instead of the connection's (a blocking query)."""
        msg = message(method, path, self.host_header, body or b"", headers or {})
        for attempt in (1, 2):
            reused = self._used
            try:
                sock = self._connect(self.timeout if timeout is None else timeout)
                sock.sendall(msg)
                got, keep = read_response(sock)
            except OSError as exc:
                self.close()
                if attempt == 1 and reused and isinstance(
                        exc, (Disconnected, BrokenPipeError, ConnectionResetError)):
                    continue
                raise
            self._used = True
            if not keep:
                self.close()
            return got
        raise AssertionError("unreachable")

    def _connect(self, timeout: float) -> socket.socket:
        # A connection the host closed while idle reads as ready (EOF): start afresh.
        if self._sock is not None and select.select([self._sock], [], [], 0)[0]:
            self.close()
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.context is not None:
                    sock = self.context.wrap_socket(sock, server_hostname=self.host)
            except OSError:
                sock.close()
                raise
            self._sock, self._used = sock, False
        self._sock.settimeout(timeout)
        return self._sock

    def close(self) -> None:
        sock, self._sock, self._used = self._sock, None, False
        if sock is not None:
            sock.close()


def request(method: str, url: str, *, timeout: float, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> Response:
    """One call on a connection of its own."""
    u = urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise ValueError(f"not an http URL: {url}")
    conn = Connection(u.hostname, u.port or 80, timeout)
    try:
        return conn.request(method, u.path + (f"?{u.query}" if u.query else "") or "/",
                            body, headers)
    finally:
        conn.close()
