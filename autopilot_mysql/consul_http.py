"""py-consul over the supervisor's own HTTP client (httpc: a kept-alive socket, answers parsed
by httptools): the same client API (consul.base), a cheaper transport. The supervisor talks
to its Consul agent every cycle on every node for the container's whole life; the figures
are in httpc's docstring (a heartbeat 0.19 ms of CPU, against 0.62-0.67 ms through
http.client and more through requests).

py-consul makes its transport pluggable (`Consul.http_connect` returns an `HTTPClient`); this
module supplies one: http, or https verified against the system's CAs, a CA file
(CONSUL_CACERT) or not at all (CONSUL_HTTP_SSL_VERIFY=false). The ACL token
(CONSUL_HTTP_TOKEN) is added here to every request that does not carry one, so no call, the
raw ones included, goes without it. Errors surface as OSError (ConnectionError,
TimeoutError, ssl.SSLError, httpc.HTTPFailure), which dcs.Consul turns into DCSError in its
one place for that.
"""

from __future__ import annotations

import importlib.util
import re
import ssl
import sys
import threading
from typing import Any

from . import httpc


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


# A client agent's answer (HTTP 500) when it knows no server to forward a call to
NO_SERVERS = "No known Consul servers"

# Consul holds a blocking query without `wait` for 5 minutes (plus up to 1/16 of jitter).
DEFAULT_WAIT = 5 * 60


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
        self._local = threading.local()
        # Set by any answer "No known Consul servers" (dcs.AgentRejoin): the local agent
        # marked every server failed
        self.no_servers = threading.Event()

    def connection(self) -> httpc.Connection:
        """This thread's connection to the agent."""
        conn: httpc.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = httpc.Connection(self.host, int(self.port), self.timeout,
                                                       self.context)
        return conn

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
        r = self.connection().request(method, target, body or b"", headers, timeout=timeout)
        if r.status == 500 and NO_SERVERS in r.text:
            self.no_servers.set()
        return base.Response(r.status, r.headers, r.text)

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
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


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
