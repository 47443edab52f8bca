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
                seconds behind (default REPLICA_MAX_LAG, 10), and it
                is not tagged NOLOADBALANCE
    /status     always (JSON: role, state, GTID position, members ...)
    /metrics    always (the Prometheus text format: metrics.py)
    /cluster    the whole cluster, as `autopilot-mysql list` shows it (clusterview.py);
                503 when Consul does not answer
    /history    every promotion and forced decision, oldest first (JSON); 503 likewise

Patroni's paths answer as Patroni's do, so HAProxy configurations written for Patroni work:
`/`, `/read-write` (= /primary), `/leader` (holds the lock's lease, writable or not),
`/read-only` (/primary or /replica), `/synchronous` or `/sync` (a replica in the primary's
acknowledgement set), `/asynchronous` or `/async` (a replica outside it).

GET, HEAD and OPTIONS are answered alike (HEAD and OPTIONS without a body), for load
balancers (Patroni's HAProxy example checks with `OPTIONS /primary`).

Control (POST, with `Authorization: Bearer <API_TOKEN>`; disabled when no token is set):

    /switchover[?to=NODE]   hand the primary role over (to NODE, or the best replica)

Between nodes (POST, signed with the replication password; failsafe.py):

    /failsafe               the primary, cut off from Consul, asks: do you still follow me?

Control endpoints change nothing themselves: they publish an event that the HA loop acts on.
"""

from __future__ import annotations

import hmac
import json
import logging
import selectors
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import failsafe
from .backup.clone import HEADER as CLONE_HEADER
from .exceptions import DCSError
from .metrics import ClusterMetrics
from .metrics import render as render_metrics
from .model import NodeStatus, Role

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 2.0  # seconds a client may take to send its request
MAX_REQUESTS = 32  # requests answered at once; more are refused with 503 at once

Rule = Callable[[NodeStatus, bool, float, float], bool]  # (status, loop alive, max lag, now)
Control = Callable[[str, dict[str, str]], tuple[int, str]]  # (action, params) -> (code, text)
Failsafe = Callable[[bytes, str], tuple[int, str]]  # (body, signature) -> (code, text)
# GET /clone: the stream writes through the callable it is given, then says if it completed
CloneStream = Callable[[Callable[[bytes], None]], tuple[bool, str]]
Clone = Callable[[str], tuple[int, str, CloneStream | None]]  # (signature) -> (code, text, stream)
ClusterDoc = Callable[[str], Any]  # "cluster" or "history" -> its JSON document (DCSError)

def _primary(s: NodeStatus, alive: bool, lag: float, now: float) -> bool:
    # Also checked against the clock at answer time: a node resumed from SIGSTOP still holds
    # a snapshot saying "primary, writable" until its loop looks again, and a load balancer
    # must not route a single write to it in that window.
    return (alive and s.healthy and s.role == Role.PRIMARY and s.writable
            and now < s.lock_valid_until)


def _replica(s: NodeStatus, alive: bool, lag: float, now: float) -> bool:
    return (alive and s.healthy and s.role == Role.REPLICA and not s.writable
            and s.replicating and s.lag is not None and s.lag <= lag
            and "noloadbalance" not in s.tags)


def _in_ack_set(s: NodeStatus) -> bool:
    return s.ack_set.get("this_node_is_member") is True


ROUTES: dict[str, Rule] = {
    "/health": lambda s, alive, lag, now: alive and s.healthy,
    "/liveness": lambda s, alive, lag, now: alive,
    "/readiness": lambda s, alive, lag, now: alive and s.healthy and s.role != Role.UNKNOWN,
    "/primary": _primary,
    "/replica": _replica,
    # Patroni's names, so load-balancer configurations written for Patroni work unchanged
    "/": _primary,
    "/read-write": _primary,
    "/leader": lambda s, alive, lag, now: (alive and s.role == Role.PRIMARY
                                           and now < s.lock_valid_until),
    "/read-only": lambda s, alive, lag, now: (_primary(s, alive, lag, now)
                                              or _replica(s, alive, lag, now)),
    "/synchronous": lambda s, alive, lag, now: _replica(s, alive, lag, now) and _in_ack_set(s),
    "/asynchronous": lambda s, alive, lag, now: (_replica(s, alive, lag, now)
                                                 and not _in_ack_set(s)),
}
ROUTES["/sync"] = ROUTES["/synchronous"]
ROUTES["/async"] = ROUTES["/asynchronous"]


def status_document(s: NodeStatus, now: float) -> dict[str, Any]:
    doc = asdict(s)
    # Writable only while the lease holds: past it the watchdog makes sure of read_only even
    # while the loop is stuck (in a Consul call that times out, say) and has not said so yet.
    doc["writable"] = s.writable and now < s.lock_valid_until
    doc["role"] = s.role.value
    doc["mysqld"] = s.mysqld.value
    doc["uptime_seconds"] = round(now - s.started_at, 1) if s.started_at else 0
    doc["last_cycle_seconds_ago"] = round(now - s.cycle_at, 2) if s.cycle_at else None
    doc["members"] = [{"node": m.node, "address": m.address, "port": m.port,
                       "role": m.role.value, "passing": m.passing} for m in s.members]
    for key in ("cycle_at", "started_at"):
        doc.pop(key)
    return doc


def switchover_refusal(*, leader: str | None, to: str, members: set[str], service: str,
                       role: str, nofailover: set[str] | None = None
                       ) -> tuple[int, str] | None:
    """POST /switchover[?to=NODE] checked against the caller's last view (`role`: what the
    topology calls the node switched from; `nofailover`: the members tagged so): the HTTP
    refusal, or None to go ahead."""
    if leader is None:
        return 409, f"there is no {role} to switch over from"
    if to and to not in members:
        return 404, f"{to} is not a member of {service}"
    if to == leader:
        return 409, f"{to} is already the {role}"
    if to and to in (nofailover or set()):
        return 409, (f"{to} is tagged NOFAILOVER: it is never made the {role} (set "
                     "NOFAILOVER=false on it and restart it first)")
    return None


# An answer: (status code, content type, body).
Answer = tuple[int, str, bytes]
REASONS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}


def _simple_get(data: bytes) -> tuple[str, str] | None:
    """The target and method of a whole GET, HEAD or OPTIONS request without a body; None
    for anything else (a worker thread reads it with http.server)."""
    end = data.find(b"\r\n\r\n")
    line_end = data.find(b"\r\n")
    if end < 0 or line_end < 0:
        return None
    parts = data[:line_end].split()
    if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD", b"OPTIONS") \
            or not parts[2].startswith(b"HTTP/"):
        return None
    if b"\ncontent-length:" in data[:end].lower() or b"\ntransfer-encoding:" in data[:end].lower():
        return None
    try:
        return parts[1].decode("ascii"), parts[0].decode("ascii")
    except UnicodeDecodeError:
        return None


class _Gate:
    """Keeps a connection out of the worker threads until its request has arrived: one
    selector thread holds every accepted socket until it is readable or REQUEST_TIMEOUT
    passed (then it is closed). So clients that connect and send nothing, however many, hold
    no thread, and Consul's and HAProxy's checks are never queued behind them. A plain GET of
    a check or of /status, the bulk of the traffic (Consul's check every second, a load
    balancer's every few hundred milliseconds), is answered right here from the status
    snapshot: no thread, no parsing beyond the request line. Anything else goes to a worker
    thread; at most MAX_REQUESTS at once, beyond that a ready request gets a 503 at once
    instead of waiting."""

    def __init__(self, httpd: ThreadingHTTPServer,
                 inline: Callable[[str], Answer | None] | None = None) -> None:
        self.httpd = httpd
        self.inline = inline
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(MAX_REQUESTS)
        self.wake_r, self.wake_w = socket.socketpair()
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="http-gate", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.wake_w.send(b"x")
        self.thread.join(2)

    def admit(self, request: socket.socket, client_address: Any) -> None:
        with self.lock:
            self.sel.register(request, selectors.EVENT_READ,
                              (client_address, time.monotonic() + REQUEST_TIMEOUT))
        self.wake_w.send(b"x")

    def _next_expiry(self) -> float | None:
        """Seconds until the oldest waiting connection expires (None: none waits): the
        thread sleeps until then, or until a connection is admitted or readable."""
        with self.lock:
            deadlines = [k.data[1] for k in self.sel.get_map().values() if k.data is not None]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _run(self) -> None:
        while not self.stopped.is_set():
            for key, _ in self.sel.select(timeout=self._next_expiry()):
                if key.data is None:
                    self.wake_r.recv(4096)
                    continue
                with self.lock:
                    self.sel.unregister(key.fileobj)
                self._dispatch(key.fileobj, key.data[0])  # type: ignore[arg-type]
            now = time.monotonic()
            with self.lock:
                expired = [k for k in self.sel.get_map().values()
                           if k.data is not None and k.data[1] < now]
                for k in expired:
                    self.sel.unregister(k.fileobj)
            for k in expired:
                log.debug("dropping %s: no request within %.0fs", k.data[0][0], REQUEST_TIMEOUT)
                self.httpd.shutdown_request(k.fileobj)  # type: ignore[arg-type]

    def _answer_inline(self, request: socket.socket, client_address: Any) -> bool:
        """Answer a plain GET here (True), or leave the request untouched (False)."""
        if self.inline is None:
            return False
        try:
            data = request.recv(8192, socket.MSG_PEEK)
        except OSError:
            return False
        got = _simple_get(data)
        answer = self.inline(got[0]) if got is not None else None
        if got is None or answer is None:
            return False
        code, ctype, body = answer
        target, method = got
        if method == "OPTIONS":  # the status alone, as Patroni answers it
            body = b""
        head = (f"HTTP/1.0 {code} {REASONS.get(code, 'Unknown')}\r\nServer: autopilot-mysql\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n").encode()
        try:
            request.recv(data.find(b"\r\n\r\n") + 4)  # the request, now consumed
            request.settimeout(0.5)  # a few KiB fit any socket buffer; never stall the gate
            request.sendall(head if method == "HEAD" else head + body)
        except OSError as exc:
            log.debug("client %s went away: %s", client_address[0], exc)
        log.debug("%s \"%s %s\" %d (inline)", client_address[0], method, target, code)
        self.httpd.shutdown_request(request)
        return True

    def _dispatch(self, request: socket.socket, client_address: Any) -> None:
        if self._answer_inline(request, client_address):
            return
        if not self.slots.acquire(blocking=False):
            log.debug("busy: turning away %s", client_address[0])
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")
            except OSError:
                pass
            self.httpd.shutdown_request(request)
            return

        def work() -> None:
            try:
                self.httpd.finish_request(request, client_address)
            except Exception:
                self.httpd.handle_error(request, client_address)
            finally:
                self.httpd.shutdown_request(request)
                self.slots.release()

        threading.Thread(target=work, name="http-request", daemon=True).start()


class HealthServer:
    def __init__(self, port: int, get_status: Callable[[], NodeStatus], *,
                 stale_after: float, max_lag: float = 10.0, host: str = "0.0.0.0",
                 clock: Callable[[], float] = time.monotonic, control: Control | None = None,
                 token: str = "", confirm: Failsafe | None = None,
                 clone: Clone | None = None, metrics: ClusterMetrics | None = None,
                 cluster: ClusterDoc | None = None) -> None:
        self.get_status = get_status
        self.cluster = cluster  # GET /cluster and /history (None: 404)
        self.metrics = metrics  # the cluster's series of GET /metrics (None: none)
        self.control = control
        self.confirm = confirm
        self.clone = clone
        self.token = token
        self.stale_after = stale_after
        self.max_lag = max_lag
        self.clock = clock
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "autopilot-mysql"
            # A client that connects and sends nothing (or trickles) is dropped after this
            # many seconds instead of holding a thread for ever.
            timeout = REQUEST_TIMEOUT

            def do_GET(self) -> None:
                outer._answer(self, body=True)

            def do_HEAD(self) -> None:
                outer._answer(self, body=False)

            def do_OPTIONS(self) -> None:
                outer._answer(self, body=False, length=False)

            def do_POST(self) -> None:
                outer._control(self)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s %s", self.address_string(), format % args)

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True
            request_queue_size = 128

            def process_request(self, request: Any, client_address: Any) -> None:
                outer.gate.admit(request, client_address)

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that hangs up before the answer (a load balancer's check timing
                # out) is routine, not a traceback for the operator to read.
                exc = sys.exc_info()[1]
                if isinstance(exc, (ConnectionError, TimeoutError)):
                    log.debug("client %s went away: %s", client_address[0], exc)
                else:
                    log.exception("error answering %s", client_address[0])

        self.httpd = Server((host, port), Handler)
        self.gate = _Gate(self.httpd, inline=self.route)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="http",
                                       daemon=True)

    def start(self) -> None:
        self.gate.start()
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.gate.stop()
        self.httpd.server_close()

    def _control(self, req: BaseHTTPRequestHandler) -> None:
        path, _, query = req.path.partition("?")
        params = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
        given = req.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if path.rstrip("/") == "/failsafe" and self.confirm is not None:
            length = int(req.headers.get("Content-Length") or 0)
            body = req.rfile.read(min(length, 4096))
            code, text = self.confirm(body, req.headers.get(failsafe.HEADER, ""))
            log.debug("POST /failsafe from %s: %d %s", req.client_address[0], code, text)
            self._send(req, code, text)
            return
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
        self._send(req, code, text)

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, code: int, text: str) -> None:
        data = (text + "\n").encode()
        req.send_response(code)
        req.send_header("Content-Type", "text/plain; charset=utf-8")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _clone(self, req: BaseHTTPRequestHandler) -> None:
        """A copy of this node as a chunked body, ended by the last chunk only when it
        completed (backup/clone.py): a cut or a failure never looks whole to the receiver."""
        assert self.clone is not None
        code, text, stream = self.clone(req.headers.get(CLONE_HEADER, ""))
        if stream is None:
            self._send(req, code, text)
            return
        req.connection.settimeout(120)  # the receiver writes into mbstream at its own pace
        req.protocol_version = "HTTP/1.1"
        req.send_response(200)
        req.send_header("Content-Type", "application/octet-stream")
        req.send_header("Transfer-Encoding", "chunked")
        req.send_header("Connection", "close")
        req.end_headers()

        def write(block: bytes) -> None:
            req.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))

        ok, why = stream(write)
        if ok:
            req.wfile.write(b"0\r\n\r\n")
            log.info("the copy of this node was sent in full")
        else:
            log.error("the copy of this node was not completed (the receiver sees a cut "
                      "stream): %s", why)
        req.close_connection = True

    def _answer(self, req: BaseHTTPRequestHandler, *, body: bool, length: bool = True) -> None:
        """GET (`body`), HEAD (the headers of GET) or OPTIONS (not `length`: the status
        alone)."""
        path = req.path.partition("?")[0].rstrip("/") or "/"
        if path == "/clone" and self.clone is not None and body:
            self._clone(req)
            return
        code, ctype, data = self.answer(req.path)
        req.send_response(code)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(data) if length else 0))
        req.send_header("Cache-Control", "no-store")
        req.end_headers()
        if body:
            req.wfile.write(data)

    def route(self, target: str) -> Answer | None:
        """The gate's inline answer to GET/HEAD `target` (the gate leaves out a HEAD's body);
        None: a worker answers it."""
        path = target.partition("?")[0].rstrip("/") or "/"
        if path != "/status" and path not in ROUTES:
            return None
        return self.answer(target)

    def answer(self, target: str) -> Answer:
        """GET `target` (a path and its query) answered from the latest status."""
        path, _, query = target.partition("?")
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
        elif path == "/metrics":
            body, ctype = render_metrics(s, now, self.metrics or (lambda: {}))
            return 200, ctype, body
        elif path in ("/cluster", "/history") and self.cluster is not None:
            try:
                code, payload = 200, json.dumps(self.cluster(path[1:]), indent=1) + "\n"
                ctype = "application/json"
            except DCSError as exc:
                code, ctype = 503, "text/plain; charset=utf-8"
                payload = f"{exc}: the cluster's state is in Consul, which did not answer\n"
        elif path in ROUTES:
            ok = ROUTES[path](s, alive, max_lag, now)
            code = 200 if ok else 503
            reason = s.last_error or s.last_decision
            if not alive:
                reason = f"supervisor loop stalled ({now - s.cycle_at:.1f}s since last cycle)"
            elif "noloadbalance" in s.tags and s.role == Role.REPLICA and not ok:
                reason = "tagged NOLOADBALANCE: kept out of the read pool"
            elif path == "/primary" and s.role == Role.PRIMARY and now >= s.lock_valid_until:
                reason = ("the leader lock was not renewed in time: it may have passed to "
                          "another node")
            payload = (f"{s.role.value} {'OK' if ok else 'NOT OK'}: "
                       f"{'' if ok else reason}\n")
            ctype = "text/plain; charset=utf-8"
        else:
            code = 404
            payload = (f"unknown path {path}; try one of /status /metrics /cluster /history "
                       f"{' '.join(ROUTES)}\n")
            ctype = "text/plain; charset=utf-8"
        return code, ctype, payload.encode()
