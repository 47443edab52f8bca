"""The HTTP endpoint that Consul's check, HAProxy and operators poll.

It only reads the latest NodeStatus snapshot the HA loop published (an immutable value swapped
whole), so a slow or stuck loop can never be hidden: a snapshot older than `stale_after` makes
every check fail. No secret is ever part of a NodeStatus.

    path        200 when                                             otherwise
    /health     mysqld answers queries (and the loop is alive)        503
    /liveness   the supervisor loop ran recently                      503
    /readiness  healthy and registered with a known role              503
    /primary    this node holds the leader lock and is writable       503
    /replica    another node is primary; this one is read-only, both   503
                replication threads run and it is at most ?lag=N
                seconds behind (default REPLICA_MAX_LAG, 10)
    /status     always (JSON: role, state, GTID position, members ...)

GET and HEAD are answered alike (HEAD without a body), for load balancers.

Control (POST, with `Authorization: Bearer <API_TOKEN>`; disabled when no token is set):

    /switchover[?to=NODE]   hand the primary role over (to NODE, or the best replica)

Control endpoints change nothing themselves: they publish an event that the HA loop acts on.
"""

from __future__ import annotations

import hmac
import json
import logging
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .model import NodeStatus, Role

log = logging.getLogger(__name__)

Rule = Callable[[NodeStatus, bool, float, float], bool]  # (status, loop alive, max lag, now)
Control = Callable[[str, dict[str, str]], tuple[int, str]]  # (action, params) -> (code, text)

ROUTES: dict[str, Rule] = {
    "/health": lambda s, alive, lag, now: alive and s.healthy,
    "/liveness": lambda s, alive, lag, now: alive,
    "/readiness": lambda s, alive, lag, now: alive and s.healthy and s.role != Role.UNKNOWN,
    # Also checked against the clock at answer time: a node resumed from SIGSTOP still holds
    # a snapshot saying "primary, writable" until its loop looks again, and a load balancer
    # must not route a single write to it in that window.
    "/primary": lambda s, alive, lag, now: (alive and s.healthy and s.role == Role.PRIMARY
                                            and s.writable and now < s.lock_valid_until),
    "/replica": lambda s, alive, lag, now: (alive and s.healthy and s.role == Role.REPLICA
                                       and not s.writable and s.replicating
                                       and s.lag is not None and s.lag <= lag),
}


def status_document(s: NodeStatus, now: float) -> dict[str, Any]:
    doc = asdict(s)
    doc["role"] = s.role.value
    doc["mysqld"] = s.mysqld.value
    doc["uptime_seconds"] = round(now - s.started_at, 1) if s.started_at else 0
    doc["last_cycle_seconds_ago"] = round(now - s.cycle_at, 2) if s.cycle_at else None
    doc["members"] = [{"node": m.node, "address": m.address, "port": m.port,
                       "role": m.role.value, "passing": m.passing} for m in s.members]
    for key in ("cycle_at", "started_at"):
        doc.pop(key)
    return doc


class HealthServer:
    def __init__(self, port: int, get_status: Callable[[], NodeStatus], *,
                 stale_after: float, max_lag: float = 10.0, host: str = "0.0.0.0",
                 clock: Callable[[], float] = time.monotonic, control: Control | None = None,
                 token: str = "") -> None:
        self.get_status = get_status
        self.control = control
        self.token = token
        self.stale_after = stale_after
        self.max_lag = max_lag
        self.clock = clock
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "autopilot-mysql"

            def do_GET(self) -> None:
                outer._answer(self, body=True)

            def do_HEAD(self) -> None:
                outer._answer(self, body=False)

            def do_POST(self) -> None:
                outer._control(self)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s %s", self.address_string(), format % args)

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that hangs up before the answer (a load balancer's check timing
                # out) is routine, not a traceback for the operator to read.
                exc = sys.exc_info()[1]
                if isinstance(exc, (ConnectionError, TimeoutError)):
                    log.debug("client %s went away: %s", client_address[0], exc)
                else:
                    log.exception("error answering %s", client_address[0])

        self.httpd = Server((host, port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="http",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _control(self, req: BaseHTTPRequestHandler) -> None:
        path, _, query = req.path.partition("?")
        params = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
        given = req.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if path.rstrip("/") != "/switchover" or self.control is None:
            code, text = 404, f"no control endpoint {path}; POST /switchover[?to=NODE]"
        elif not self.token:
            code, text = 403, ("control endpoints are disabled: set API_TOKEN (or "
                               "API_TOKEN_FILE) on the nodes to enable them")
        elif not hmac.compare_digest(given.encode(), self.token.encode()):
            code, text = 401, "missing or wrong token: send Authorization: Bearer <API_TOKEN>"
        else:
            code, text = self.control("switchover", params)
        log.info("POST %s from %s: %d %s", path, req.client_address[0], code, text)
        data = (text + "\n").encode()
        req.send_response(code)
        req.send_header("Content-Type", "text/plain; charset=utf-8")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _answer(self, req: BaseHTTPRequestHandler, *, body: bool) -> None:
        path, _, query = req.path.partition("?")
        path = path.rstrip("/") or "/"
        try:
            max_lag = float(urllib.parse.parse_qs(query).get("lag", [self.max_lag])[0])
        except ValueError:
            max_lag = -1.0  # a malformed ?lag= fails the check rather than passing it
        s = self.get_status()
        now = self.clock()
        alive = s.cycle_at > 0 and now - s.cycle_at <= self.stale_after
        if path == "/status":
            code, payload = 200, json.dumps(status_document(s, now), indent=1) + "\n"
            ctype = "application/json"
        elif path in ROUTES:
            ok = ROUTES[path](s, alive, max_lag, now)
            code = 200 if ok else 503
            reason = s.last_error or s.last_decision
            if not alive:
                reason = f"supervisor loop stalled ({now - s.cycle_at:.1f}s since last cycle)"
            elif path == "/primary" and s.role == Role.PRIMARY and now >= s.lock_valid_until:
                reason = ("the leader lock was not renewed in time: it may have passed to "
                          "another node")
            payload = (f"{s.role.value} {'OK' if ok else 'NOT OK'}: "
                       f"{'' if ok else reason}\n")
            ctype = "text/plain; charset=utf-8"
        else:
            code = 404
            payload = f"unknown path {path}; try one of /status {' '.join(ROUTES)}\n"
            ctype = "text/plain; charset=utf-8"
        data = payload.encode()
        req.send_response(code)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(data)))
        req.send_header("Cache-Control", "no-store")
        req.end_headers()
        if body:
            req.wfile.write(data)
