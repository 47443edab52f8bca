"""py-consul over a socket and httptools: the same client API (consul.base), a cheaper
transport. The supervisor talks to its Consul agent every cycle on every node for the
container's whole life, and on an idle node each call comes after half a second of sleep,
with cold caches: through requests a call cost about 0.65 ms of CPU, through http.client
0.62-0.67 ms, through one kept-alive socket whose answer httptools parses (llhttp, the HTTP
parser of Node.js, also uvicorn's) 0.19 ms (one heartbeat transaction against a local agent,
0.5 s apart; 0.12 ms, 0.14 ms and 0.03 ms back to back).

py-consul makes its transport pluggable (`Consul.http_connect` returns an `HTTPClient`); this
module supplies one: http, or https verified against the system's CAs, a CA file
(CONSUL_CACERT) or not at all (CONSUL_HTTP_SSL_VERIFY=false). The ACL token
(CONSUL_HTTP_TOKEN) is added here to every request that does not carry one, so no call, the
raw ones included, goes without it. Errors surface as OSError (ConnectionError,
TimeoutError, ssl.SSLError), which dcs.Consul turns into DCSError in its one place for that.
"""

from __future__ import annotations

import importlib.util
import re
import select
import socket
import ssl
import sys
import threading
from typing import Any

import httptools


def _load_py_consul() -> None:
    """py-consul's package __init__ imports its requests-based client (consul.std), and with
    it requests and urllib3: 8 MiB held in every container for its whole life
    (bench/supervisor.py), for a transport this module replaces. The package is set up here
    without running that __init__: the same package object, with the names the rest of
    py-consul takes from it (Check, the exceptions); consul.std is never imported. If the
    package is not laid out as expected (another py-consul release), the plain import."""
    if "consul" in sys.modules:
        return
    spec = importlib.util.find_spec("consul")
    if spec is None or spec.submodule_search_locations is None:
        return  # not installed: the import below says so
    pkg = importlib.util.module_from_spec(spec)  # not executed
    sys.modules["consul"] = pkg
    try:
        from consul import exceptions
        from consul.check import Check
        pkg.Check = Check  # type: ignore[attr-defined]
        for name in ("ACLDisabled", "ACLPermissionDenied", "ConsulException", "NotFound",
                     "Timeout"):
            setattr(pkg, name, getattr(exceptions, name))
        import consul.base  # noqa: F401
        import consul.callback  # noqa: F401
    except (ImportError, AttributeError):
        for name in [m for m in sys.modules if m == "consul" or m.startswith("consul.")]:
            del sys.modules[name]


_load_py_consul()
import consul  # noqa: E402  (dcs takes it from here, loaded as above)
from consul import base  # noqa: E402

__all__ = ["HTTPClient", "Consul", "consul", "parse_duration"]

# A Go duration ("5s", "100ms", "1m30s"), read as py-consul's consul.std reads it.
_DURATION = re.compile(r"([\d.]+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(duration: str) -> float:
    return sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(duration))


_BAD_TARGET = re.compile("[\x00-\x20\x7f]")  # what http.client refuses in a URL too

# Consul holds a blocking query without `wait` for 5 minutes (plus up to 1/16 of jitter).
DEFAULT_WAIT = 5 * 60


class Headers(dict[str, str]):
    """A response's headers, looked up in any case (py-consul asks for X-Consul-Index)."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return super().__contains__(str(name).lower())


class _Answer:
    """httptools' callbacks for one response."""

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


class Disconnected(ConnectionError):
    """The agent closed the connection before answering (a kept-alive one it let go)."""


class HTTPClient(base.HTTPClient):  # type: ignore[misc]
    """One connection per thread (the loop, each watcher), reused while the agent keeps it."""

    def __init__(self, host: str, port: int, scheme: str, verify: Any, cert: Any, *,
                 timeout: float, token: str = "") -> None:
        super().__init__(host, port, scheme, verify, cert)
        if scheme not in ("http", "https"):
            raise ValueError(f"Consul is spoken to over http or https, not {scheme}")
        self.timeout = timeout
        self.token = token
        self.context: ssl.SSLContext | None = None
        if scheme == "https":
            if verify is False:
                self.context = ssl.create_default_context()
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE
            else:
                self.context = ssl.create_default_context(
                    cafile=verify if isinstance(verify, str) else None)
        name = f"[{host}]" if ":" in host else host
        default = 443 if scheme == "https" else 80
        self.host_header = name if int(port) == default else f"{name}:{port}"
        self._local = threading.local()

    def _message(self, method: str, target: str, body: bytes,
                 headers: dict[str, str]) -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body or method in ("PUT", "POST", "DELETE"):
            lines.append(f"Content-Length: {len(body)}")
        if any(c in line for line in lines for c in "\r\n\0") or _BAD_TARGET.search(target):
            # A token or a key with a line break would smuggle a header (or a request).
            raise ConnectionError(f"{method} {target.split('?')[0]}: refused to send a "
                                  "request line or header with a line break or a space in "
                                  "it (check CONSUL_HTTP_TOKEN and the key names)")
        return "\r\n".join(lines).encode("latin-1", "replace") + b"\r\n\r\n" + body

    def _request(self, method: str, path: str, params: Any, data: str | bytes,
                 headers: dict[str, str] | None) -> base.Response:
        target = self.uri(path, params)[len(self.base_uri):]
        body = data.encode() if isinstance(data, str) else data
        timeout = self.timeout
        params = dict(params or ())
        if "index" in params:  # a blocking query answers after its wait, plus jitter
            wait = parse_duration(params["wait"]) if "wait" in params else DEFAULT_WAIT
            timeout += wait + wait / 16
        headers = dict(headers or {})
        if self.token:
            headers.setdefault("X-Consul-Token", self.token)
        message = self._message(method, target, body or b"", headers)
        for attempt in (1, 2):
            reused = bool(getattr(self._local, "used", False))
            try:
                sock = self._connection(timeout)
                sock.sendall(message)
                answer, keep = self._read(sock)
            except (OSError, httptools.HttpParserError) as exc:
                self._drop()
                # The agent may close a kept-alive connection just as we reuse it (before
                # it read the request): one retry on a fresh connection.
                if attempt == 1 and reused and isinstance(
                        exc, (Disconnected, BrokenPipeError, ConnectionResetError)):
                    continue
                if isinstance(exc, OSError):
                    raise
                raise ConnectionError(f"{method} {path}: unreadable answer: {exc!r}") from exc
            self._local.used = True
            if not keep:
                self._drop()
            return base.Response(answer[0], answer[1],
                                 answer[2].decode("utf-8", "replace"))
        raise AssertionError("unreachable")

    @staticmethod
    def _read(sock: socket.socket) -> tuple[tuple[int, Headers, bytes], bool]:
        """One response: ((status, headers, body), whether the connection may be reused)."""
        answer = _Answer()
        parser = answer.parser = httptools.HttpResponseParser(answer)
        got = False
        while not answer.done:
            data = sock.recv(65536)
            if not data:
                if answer.headers_done and "content-length" not in answer.headers \
                        and "transfer-encoding" not in answer.headers:
                    # A body that ends with the connection (HTTP/1.0 style): all of it.
                    return (parser.get_status_code(), answer.headers,
                            b"".join(answer.body)), False
                if not got:
                    raise Disconnected("the Consul agent closed the connection without "
                                       "answering")
                raise ConnectionError("the Consul agent closed the connection mid-answer")
            got = True
            parser.feed_data(data)
        return (parser.get_status_code(), answer.headers, b"".join(answer.body)), answer.keep

    def _connection(self, timeout: float) -> socket.socket:
        sock: socket.socket | None = getattr(self._local, "sock", None)
        # A connection the agent closed while idle reads as ready (EOF): start afresh.
        if sock is not None and select.select([sock], [], [], 0)[0]:
            self._drop()
            sock = None
        if sock is None:
            sock = socket.create_connection((self.host, int(self.port)), timeout=timeout)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.context is not None:
                    sock = self.context.wrap_socket(sock, server_hostname=self.host)
            except OSError:
                sock.close()
                raise
            self._local.sock = sock
            self._local.used = False
        sock.settimeout(timeout)
        return sock

    def _drop(self) -> None:
        sock = getattr(self._local, "sock", None)
        self._local.sock = None
        self._local.used = False
        if sock is not None:
            sock.close()

    def get(self, callback: Any, path: str, params: Any = None,
            headers: dict[str, str] | None = None, raw: bool = False) -> Any:
        return callback(self._request("GET", path, params, b"", headers))

    def put(self, callback: Any, path: str, params: Any = None, data: str | bytes = "",
            headers: dict[str, str] | None = None) -> Any:
        return callback(self._request("PUT", path, params, data, headers))

    def delete(self, callback: Any, path: str, params: Any = None, data: str | bytes = "",
               headers: dict[str, str] | None = None) -> Any:
        return callback(self._request("DELETE", path, params, data, headers))

    def post(self, callback: Any, path: str, params: Any = None, data: str = "",
             headers: dict[str, str] | None = None) -> Any:
        return callback(self._request("POST", path, params, data, headers))

    def close(self) -> None:
        self._drop()


class Consul(base.Consul):  # type: ignore[misc]
    """consul.Consul with the http.client transport; `timeout`: seconds to connect or answer
    (a blocking query's wait is added to it)."""

    def __init__(self, *args: Any, timeout: float = 3.0, **kwargs: Any) -> None:
        self._timeout = timeout
        self._token = str(kwargs.get("token") or "")
        super().__init__(*args, **kwargs)

    def http_connect(self, host: str, port: int, scheme: str, verify: Any = True,
                     cert: Any = None) -> HTTPClient:
        return HTTPClient(host, port, scheme, verify, cert, timeout=self._timeout,
                          token=self._token)
