"""Small HTTP calls between nodes (a peer's /status, the failsafe's confirmation) over the
standard library's http.client. requests, with urllib3 and charset_normalizer, held 8 MiB in
every container for its whole life (bench/supervisor.py) for a few GETs and POSTs to peers on
the same network; the Consul transport went the same way for CPU (consul_http.py). Plain
http, as the nodes' API speaks. Every failure is an OSError (refused, timed out, a broken
answer) or, for a body that is not JSON, a ValueError."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class HTTPFailure(OSError):
    """The peer answered something that is not HTTP, or hung up mid-answer."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Connection:
    """One host's kept-alive connection, for a thread that asks it again and again (a
    peer's poller): reopened after any failure."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Response:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self._conn.request(method, path, body=body, headers=headers or {})
            r = self._conn.getresponse()
            got = Response(r.status, r.read())
            if r.will_close:
                self.close()
            return got
        except http.client.HTTPException as exc:
            self.close()
            raise HTTPFailure(f"{self.host}:{self.port}: {type(exc).__name__}: {exc}") from exc
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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
