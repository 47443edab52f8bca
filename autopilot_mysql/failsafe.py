"""Failsafe mode (Patroni's failsafe_mode is the model): writes go on through a Consul outage.

While Consul is unreachable, the primary cannot renew its lease with a heartbeat (election.I1).
With FAILSAFE on it asks, every cycle, every member of the last known membership (the
acknowledgement set and the nodes that passed their checks when Consul last answered) to
confirm over the nodes' HTTP API (POST /failsafe, signed with the replication password) that
it still follows it. When all confirm, the lease runs on from the moment the round started;
when one refuses or does not answer, the lease runs out and the primary fences, as without
failsafe.

A member confirms only when it cannot reach Consul either (a primary cut off from a Consul
that everyone else reaches is not a Consul outage: the others must be free to elect) and the
last primary it knew is the one asking. By confirming it promises not to publish a position or
take the lock until the asked lease, plus the grace margin, ran out by its own clock. Safety
(election.I1, I5): an election needs the positions of the acknowledgement set's members (or the
unsynced primary itself), all of whom confirmed, so no other node can take the lock before the
primary's failsafe lease ran out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from . import httpc
from .election import GRACE_MARGIN

log = logging.getLogger(__name__)
HEADER = "X-Autopilot-Signature"
MAX_SKEW = 60.0  # seconds a request's wall-clock stamp may differ from ours (replays)


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Request:
    primary: str
    lease: float
    at: float  # the primary's wall clock, against replays


def parse(secret: str, body: bytes, signature: str, now_wall: float) -> Request | str:
    """The request, or why it is refused."""
    if not hmac.compare_digest(sign(secret, body), signature or ""):
        return "bad signature (the nodes must share MYSQL_REPL_PASSWORD)"
    try:
        doc = json.loads(body)
        req = Request(str(doc["primary"]), float(doc["lease"]), float(doc["at"]))
    except (ValueError, KeyError, TypeError):
        return "malformed request"
    if abs(now_wall - req.at) > MAX_SKEW:
        return f"stale request (its clock is {now_wall - req.at:+.0f}s from ours)"
    if not 0 < req.lease <= 60:
        return f"implausible lease {req.lease}"
    return req


def answer(req: Request, *, me: str, consul_ok: bool, last_leader: str | None
           ) -> tuple[bool, str]:
    """Whether this node confirms the primary's failsafe lease (pure)."""
    if req.primary == me:
        return False, "that is this node"
    if consul_ok:
        return False, "this node reaches Consul: it is not a Consul outage"
    if last_leader != req.primary:
        return False, f"the last primary this node knew is {last_leader or 'nobody'}"
    return True, f"following {req.primary}; not electing for {req.lease + GRACE_MARGIN:.1f}s"


class Promise:
    """The confirming side's promise (thread-safe: set by the HTTP thread, read by the loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0
        self._to = ""

    def give(self, primary: str, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, time.monotonic() + seconds)
            self._to = primary

    def left(self) -> tuple[float, str]:
        with self._lock:
            return self._until - time.monotonic(), self._to


def confirm_round(secret: str, *, me: str, lease: float, members: Mapping[str, str],
                  port: int, timeout: float = 0.4) -> tuple[bool, list[str]]:
    """Ask every member (node -> address) at once; (all confirmed, who did not)."""
    body = json.dumps({"primary": me, "lease": lease, "at": time.time()}).encode()
    headers = {HEADER: sign(secret, body), "Content-Type": "application/json"}
    refused: list[str] = []
    lock = threading.Lock()

    def ask(node: str, address: str) -> None:
        try:
            r = httpc.request("POST", f"http://{address}:{port}/failsafe", body=body,
                              headers=headers, timeout=timeout)
            ok = r.status == 200
            why = "" if ok else r.text.strip()[:120]
        except (OSError, ValueError) as exc:
            ok, why = False, type(exc).__name__
        if not ok:
            with lock:
                refused.append(f"{node} ({why})")

    threads = [threading.Thread(target=ask, args=(n, a), daemon=True)
               for n, a in sorted(members.items())]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 0.2)
    return not refused and all(not t.is_alive() for t in threads), refused


def lease_round(secret: str, *, me: str, lease: float, members: set[str],
                addresses: Mapping[str, str], port: int) -> tuple[bool, str]:
    """One round for the lock holder while Consul is unreachable: (every member confirmed,
    what to log). A member whose address is unknown counts as not confirming."""
    members = members - {me}
    unknown = sorted(m for m in members if m not in addresses)
    ok, refused = confirm_round(secret, me=me, lease=lease, port=port,
                                members={m: addresses[m] for m in members if m in addresses})
    if ok and not unknown:
        return True, f"failsafe: {', '.join(sorted(members)) or 'no other member'} confirmed"
    return False, ("failsafe: not confirmed by " + ", ".join(refused + unknown)
                   + ": the lease runs out and this node fences")


def confirm(secret: str, body: bytes, signature: str, *, me: str, consul_ok: bool,
            last_leader: str | None, promise: Promise) -> tuple[int, str]:
    """POST /failsafe on the confirming side (from the HTTP thread): the HTTP answer. `consul_ok`
    is this node's last view (pass True when that view is stale: no promise then)."""
    req = parse(secret, body, signature, time.time())
    if isinstance(req, str):
        return 400, req
    ok, why = answer(req, me=me, consul_ok=consul_ok, last_leader=last_leader)
    if not ok:
        return 409, why
    promise.give(req.primary, req.lease + GRACE_MARGIN)
    return 200, why

