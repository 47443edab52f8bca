"""Fakes shared by the unit tests of pure logic."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# method, path, body -> status, body
Answer = Callable[[str, str, bytes], tuple[int, bytes]]


@dataclass
class FakeClock:
    """A monotonic clock that moves only when told to (or by its own sleep)."""

    now: float = 100.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def loopback_http(answer: Answer) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """An HTTP/1.1 server on loopback (keep-alive, as the nodes' API and Consul's agent)
    answering every request with `answer`; yields its port and the (method, path) of every
    request it got."""
    seen: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            got = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.command, self.path))
            code, body = answer(self.command, self.path, got)
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_POST = _any  # noqa: N815 (http.server's names)

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv.server_address[1], seen
    finally:
        srv.shutdown()
        srv.server_close()
