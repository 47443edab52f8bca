"""Consul, the distributed configuration store (DCS): service registration, the leader lock,
server_id allocation, and blocking watches.

Contract (in the spirit of Patroni's AbstractDCS):
- Every call either returns within the client timeout or raises DCSError; Consul client errors
  and transport errors are turned into DCSError in exactly one place (`_call`).
- `acquire_leader` and `next_server_id` are atomic compare-and-set operations in Consul; two
  nodes can never both succeed. `acquire_leader` also fails when the acknowledgement set
  changed since the caller read it (election.I5), in the same transaction.
- `heartbeat`, `write_sync` and `record_handover` succeed only while the caller's session holds
  the leader key (a transaction that checks it): a primary that lost the lock can never write
  them, however late its request arrives (election.I1-I4).
- `cluster_state(consistent=True)` is a linearizable read (Consul's `consistent` mode): an
  election never decides on a stale acknowledgement set.
- Sessions are created with behavior=delete and lock-delay 0: when a session is invalidated
  (TTL expiry, its node's serfHealth or its service check failing, or destroy), the leader key
  disappears at once and another node may take it without waiting. Consul may take up to twice
  the TTL to expire a session, never less than the TTL; the loop renews it every third of the
  TTL. Safety does not rest on the TTL: the primary's lease runs from its last heartbeat
  (election.I1), and a new primary waits it out (I6).
- Watches use Consul blocking queries (no polling on a timer) and publish events on the bus;
  the primary's heartbeat, which changes every cycle, lives outside the watched prefix and
  wakes nobody.
- Keys and their documents are in `keys.py`; a malformed value is skipped and named there.
"""

from __future__ import annotations

import base64
import calendar
import functools
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from . import consul_http, keys
from .consul_http import consul  # py-consul, loaded without its requests transport
from .election import SyncState
from .events import Code, Event, EventBus
from .exceptions import CatalogForgot, DCSError
from .keys import ClusterKeys
from .model import Member, Role

log = logging.getLogger(__name__)
T = TypeVar("T")

CHECK_INTERVAL = "1s"
CHECK_TIMEOUT = "1s"
DEREGISTER_AFTER = "1m"  # Consul's minimum: a dead node leaves the catalog a minute later
HISTORY_KEEP = 1000  # entries of the cluster's history kept in Consul
PROMOTIONS = ("-promoted", "-galera-writer")  # history kinds that start a new timeline


def scheduled_at(req: dict[str, str]) -> float | None:
    """A switchover request's scheduled time (seconds since the epoch), None: at once. An
    unreadable time counts as now: the request was meant, the operator is told at once."""
    text = req.get("at")
    if not text:
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return 0.0


def _stamp_time(name: str) -> str:
    """The time in a history key's name (20261203T181920.123-kind) as ISO 8601 UTC."""
    try:
        t = time.strptime(name[:15], "%Y%m%dT%H%M%S")
    except ValueError:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", t)


class Consul:
    def __init__(self, host: str, port: int, service_name: str, *, timeout: float = 3.0,
                 scheme: str = "http", token: str = "", verify: bool | str = True,
                 dc: str | None = None) -> None:
        self.address = f"{host}:{port}" if scheme == "http" else f"{scheme}://{host}:{port}"
        self.service_name = service_name
        self.dc = dc
        self.client = consul_http.Consul(host=host, port=port, timeout=timeout, scheme=scheme,
                                         token=token or None, verify=verify, dc=dc)
        self.keys = keys.Names(service_name)
        self.prefix = self.keys.prefix
        self.leader_key = self.keys.leader
        self.server_id_key = self.keys.server_id_counter
        self.snapshot_lock_key = self.keys.snapshot_lock
        self.snapshot_pointer_key = self.keys.snapshot_pointer
        self.servers: list[str] = []  # where the local agent joins (CONSUL_AGENT); [] none
        self.resynced_at = -RESYNC_EVERY
        # Set by any call the local agent answered "No known Consul servers" (AgentRejoin)
        self.servers_lost: threading.Event = self.client.http.no_servers

    @classmethod
    def for_settings(cls, s: Any, *, timeout: float = 3.0, service: str | None = None
                     ) -> Consul:
        """The Consul a node's settings (config.Settings) name, token and TLS included."""
        c = cls(service_name=service or s.service_name, timeout=timeout,
                **s.consul_client())
        c.servers = s.consul_servers if s.consul_agent else []
        return c

    def _params(self) -> list[tuple[str, str]]:
        """Query parameters of the raw calls (the endpoint helpers add them themselves)."""
        return [("dc", self.dc)] if self.dc else []

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except consul.ACLPermissionDenied as exc:
            raise self._denied(what, exc) from exc
        except (consul.ConsulException, OSError, ValueError) as exc:
            # ssl is read only over https: plain http never loads it (cli._lean)
            if self.address.startswith("https:") and isinstance(exc, ssl.SSLError):
                raise DCSError(
                    f"Consul at {self.address}: {what} failed: TLS error ({exc}). Set "
                    "CONSUL_CACERT to the CA that signed Consul's certificate (or "
                    "CONSUL_HTTP_SSL_VERIFY=false, only to try)") from exc
            raise DCSError(f"Consul at {self.address}: {what} failed: {exc}") from exc

    # --- liveness -------------------------------------------------------------------------------

    def ping(self) -> str:
        """The Consul cluster's leader address; raises DCSError when there is none."""
        leader = self._call("status/leader", self.client.status.leader)
        if not leader:
            raise DCSError(f"Consul at {self.address} answers but has no leader (a server "
                           "quorum is missing)")
        return str(leader)

    # --- service registration ---------------------------------------------------------------

    def register(self, *, service_id: str, address: str, port: int, health_url: str,
                 role: Role, meta: dict[str, str]) -> None:
        check = consul.Check.http(health_url, CHECK_INTERVAL, timeout=CHECK_TIMEOUT,
                                  deregister=DEREGISTER_AFTER)
        self._call("service registration", lambda: self.client.agent.service.register(
            self.service_name, service_id=service_id, address=address, port=port,
            tags=[role.value], check=check, meta=meta))

    def deregister(self, service_id: str) -> None:
        self._call("service deregistration",
                   lambda: self.client.agent.service.deregister(service_id))

    def check_status(self, service_id: str) -> str | None:
        """Status of our service's check on the agent ('passing', 'critical' ...), None when
        the service is not registered there."""
        checks = self._call("agent checks", self.client.agent.checks)
        for check in checks.values():
            if check.get("ServiceID") == service_id:
                return str(check.get("Status"))
        return None

    def members(self, index: int | None = None, wait: str | None = None
                ) -> tuple[int, tuple[Member, ...]]:
        idx, entries = self._call("service health", lambda: self.client.health.service(
            self.service_name, index=index, wait=wait))
        out = []
        for e in entries:
            svc, node = e["Service"], e["Node"]
            out.append(Member(
                node=str(node["Node"]) if not svc.get("Meta", {}).get("node")
                else str(svc["Meta"]["node"]),
                address=str(svc.get("Address") or node.get("Address")),
                port=int(svc.get("Port") or 0), service_id=str(svc["ID"]),
                passing=all(c.get("Status") == "passing" for c in e.get("Checks", [])),
                tags=tuple(svc.get("Tags") or ()),
                meta=tuple(sorted((svc.get("Meta") or {}).items()))))
        return int(idx), tuple(sorted(out, key=lambda m: m.service_id))

    # --- sessions and the leader lock ----------------------------------------------------------

    def create_session(self, *, name: str, ttl: float, service_id: str | None) -> str:
        """A session invalidated by its node's serfHealth and by our service's check.
        NodeChecks/ServiceChecks are sent explicitly: Consul maps the older `Checks` field to
        node checks only, so a service check given there would be silently ignored."""
        body: dict[str, Any] = {"Name": name, "LockDelay": "0s", "Behavior": "delete",
                                "TTL": f"{int(ttl)}s", "NodeChecks": ["serfHealth"]}
        if service_id:
            body["ServiceChecks"] = [{"ID": f"service:{service_id}"}]
        try:
            sid = self._call("session create", lambda: self.client.http.put(
                consul.callback.CB.json(is_id=True), "/v1/session/create",
                params=self._params(), data=json.dumps(body)))
        except DCSError as exc:
            if any(s in str(exc) for s in FORGOTTEN):
                raise CatalogForgot(
                    f"Consul's catalog does not know this node or its health check yet "
                    f"({str(exc).rsplit(': ', 1)[-1]}): its servers lost their data, or its "
                    "agent has not synced; this node registers again and retries") from exc
            raise
        return str(sid)

    def resync(self, register: Callable[[], None], now: float) -> None:
        """Consul's catalog forgot this node (CatalogForgot): have the local agent join the
        servers again, so that the servers learn it at once instead of at the next gossip
        exchange (half a minute and more), and register the service and its check again, so
        that the agent pushes them at once instead of at its next anti-entropy round. At most
        every RESYNC_EVERY seconds (`now`: monotonic)."""
        if now - self.resynced_at < RESYNC_EVERY:
            return
        self.resynced_at = now
        done: list[str] = []
        for server in self.servers:
            try:
                self._call("agent join", functools.partial(self.client.agent.join, server))
                done.append(f"its agent joined {server} again")
            except DCSError as exc:
                done.append(f"its agent could not join {server} ({exc})")
        try:
            register()
            done.append("the service, its check and its member record registered again")
        except DCSError as exc:
            done.append(f"registering again failed ({exc}); retried in {RESYNC_EVERY:.0f}s")
        log.warning("Consul's catalog does not know this node (its servers lost their data, "
                    "or its agent had not synced yet): %s", "; ".join(done))

    def watch(self, bus: EventBus, stop: threading.Event) -> None:
        """The supervisors' Consul threads: the members' and the keys' watches, and with a
        local agent (CONSUL_AGENT), its rejoin (AgentRejoin)."""
        Watcher("members-watch", lambda i: self.members(index=i, wait="20s"), bus,
                Code.MEMBERS_CHANGED, stop).start()
        Watcher("keys-watch", lambda i: self.watch_keys(i, "20s"), bus,
                Code.LEADER_CHANGED, stop).start()
        if self.servers:
            AgentRejoin(self, stop).start()

    def renew_session(self, session: str) -> bool:
        """True when renewed; False when Consul no longer knows the session."""
        try:
            self.client.session.renew(session)
            return True
        except consul.NotFound:
            return False
        except (consul.ConsulException, OSError, ValueError) as exc:
            raise DCSError(f"Consul at {self.address}: session renew failed: {exc}") from exc

    def destroy_session(self, session: str) -> None:
        self._call("session destroy", lambda: self.client.session.destroy(session))

    def destroy_session_of(self, session: str) -> None:
        """Destroy another node's session (its keys go with it): the takeover of a primary
        that lost Consul but not its replicas (election.I6 still holds: its lease ran out)."""
        self._call("session destroy", lambda: self.client.session.destroy(session))

    def _txn(self, what: str, ops: list[dict[str, Any]]) -> bool:
        """Run a Consul transaction: True when applied, False when one of its checks failed
        (the lock is not ours, a key changed since it was read); DCSError otherwise."""
        return self._txn_index(what, ops, "") is not None

    def _txn_index(self, what: str, ops: list[dict[str, Any]], key: str) -> int | None:
        """`_txn`, answering the modify index `key` has after the transaction (0 when it is
        not among the results, or `key` is ""); None: a check failed, nothing was applied.
        A writer that keeps this index needs no read after its own write to write again:
        a read served before the write reached it (a watch held up by a Consul server that
        went silent, a cached view) never makes its next check-index fail."""
        code, body = self._call(what, lambda: self.client.http.put(
            lambda r: (r.code, r.body), "/v1/txn", params=self._params(),
            data=json.dumps(ops)))
        if code == 200:
            if not key:
                return 0
            try:
                results = json.loads(body).get("Results") or []
                return max((int(r["KV"].get("ModifyIndex") or 0) for r in results
                            if isinstance(r, dict) and isinstance(r.get("KV"), dict)
                            and r["KV"].get("Key") == key), default=0)
            except (ValueError, TypeError, AttributeError):
                return 0  # applied; the index unknown: the next write reads first
        self._raise_if_denied(what, code, body)
        if code == 409:
            log.debug("Consul transaction %s rolled back: %s", what, str(body)[:300])
            return None
        raise DCSError(f"Consul at {self.address}: {what} failed: HTTP {code} {str(body)[:200]}")

    def _raise_if_denied(self, what: str, code: int, body: Any) -> None:
        """A transaction refused by ACLs (403, or 409 with "Permission denied" among its
        errors: Consul reports a denied operation as a rolled-back transaction) is a
        configuration error to name, never a lost race to retry."""
        if code == 403 or (code == 409 and "permission denied" in str(body).lower()):
            raise self._denied(what, body)

    def _denied(self, what: str, body: Any) -> DCSError:
        return DCSError(
            f"Consul at {self.address}: {what} failed: permission denied ({str(body)[:200]}). "
            "Consul enforces ACLs: set CONSUL_HTTP_TOKEN (or CONSUL_HTTP_TOKEN_FILE) to a token "
            f"with write access to the keys service/{self.service_name}*, sessions, the "
            "service and node registrations, and the node's own agent (to have it join the "
            "servers again after a network cut)")

    def acquire_leader(self, session: str, node: str, address: str, gtid: str,
                       sync_index: int) -> bool:
        """Take the leader key, unless the acknowledgement set changed since it was read at
        `sync_index` (0: it did not exist). `gtid` is our position at promotion: a former
        primary that comes back compares its own history with it to name errant transactions."""
        doc = {"node": node, "address": address, "gtid": gtid}
        return self._txn("leader key acquire", [
            keys.txn_check_index(self.keys.sync, sync_index),
            keys.txn_lock(self.keys.leader, doc, session)])

    def release_leader(self, session: str) -> None:
        self._call("leader key release", lambda: self.client.kv.put(
            self.keys.leader, "", release=session))

    def heartbeat(self, session: str, node: str, n: int, lease: float) -> bool:
        """The primary's proof, each cycle, that its session still holds the lock; others time
        the old primary's lease from the last one they saw (election.grace_ends)."""
        return self._txn("heartbeat", [
            keys.txn_check_session(self.keys.leader, session),
            keys.txn_set(self.keys.heartbeat, {"node": node, "n": n, "lease": lease})])

    def write_sync(self, session: str, sync: SyncState) -> SyncState | None:
        """Replace the acknowledgement set, if our session holds the lock and nobody changed
        the set since we read it at `sync.index`: the set as written, at its new index
        (None: a check failed)."""
        index = self._txn_index("acknowledgement set write", [
            keys.txn_check_session(self.keys.leader, session),
            keys.txn_check_index(self.keys.sync, sync.index),
            keys.txn_set(self.keys.sync, sync.doc())], self.keys.sync)
        return None if index is None else replace(sync, index=index or sync.index)

    # --- everything one cycle needs, in one read ---------------------------------------------

    def watch_keys(self, index: int | None, wait: str) -> tuple[int, tuple[tuple[str, int], ...]]:
        """Block until anything under the service's prefix changes, but the primary's
        heartbeat; the value (keys and their modify indexes) changes with every other write."""
        idx, items = self._call("cluster keys watch", lambda: self.client.kv.get(
            self.prefix, recurse=True, index=index, wait=wait))
        value = tuple(sorted((str(i["Key"]), int(i.get("ModifyIndex") or 0))
                             for i in items or []))
        return int(idx or 0), value

    def cluster_state(self, consistent: bool = False) -> ClusterKeys:
        """Every key of the service (keys.py) and the primary's heartbeat, from one read-only
        transaction (one request); `consistent`: a linearizable read, for election
        decisions."""
        ops = [{"KV": {"Verb": "get-tree", "Key": k}} for k in (self.prefix, self.keys.heartbeat)]
        code, body = self._call("cluster keys read", lambda: self.client.http.put(
            lambda r: (r.code, r.body), "/v1/txn", data=json.dumps(ops),
            params=self._params() + ([("consistent", "")] if consistent else [])))
        if code != 200:
            self._raise_if_denied("cluster keys read", code, body)
            raise DCSError(f"Consul at {self.address}: cluster keys read failed: HTTP {code} "
                           f"{str(body)[:200]}")
        try:
            results = json.loads(body).get("Results") or []
            items = [{**r["KV"], "Value": base64.b64decode(r["KV"].get("Value") or "")}
                     for r in results if isinstance(r, dict) and isinstance(r.get("KV"), dict)]
        except (ValueError, TypeError, AttributeError) as exc:
            raise DCSError(f"Consul at {self.address}: cluster keys read: unreadable answer "
                           f"({exc})") from exc
        return keys.parse(self.keys, items)

    def request_switchover(self, leader: str, to: str | None, session: str,
                           at: float | None = None, by: str = "") -> None:
        """A request for the primary holding `session` (a request left behind never fires
        for a later term of the same node: its session differs); `at`: not before this
        time (seconds since the epoch: a scheduled switchover)."""
        doc: dict[str, str] = {"from": leader, "to": to or "", "session": session}
        if at is not None:
            doc["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        if by:
            doc["by"] = by
        self._call("switchover request", lambda: self.client.kv.put(
            self.keys.switchover, json.dumps(doc)))

    def hand_over(self, session: str, node: str, gtid: str, to: str, term: int = -1) -> None:
        """Record that we fenced ourselves at `gtid` (the next primary waits no fence grace
        and must hold that position; `to`, in the term `term`, may take the lock on it alone:
        election.I10) and release the leader lock, in one transaction that checks our
        session holds it."""
        doc: dict[str, Any] = {"from": node, "gtid": gtid, "to": to}
        if term >= 0:
            doc["term"] = term
        if not self._txn("handover record", [
                keys.txn_check_session(self.keys.leader, session),
                keys.txn_set(self.keys.handover, doc),
                keys.txn_delete(self.keys.switchover),
                keys.txn_unlock(self.keys.leader, session)]):
            raise DCSError("the handover could not be recorded: our session no longer holds "
                           "the lock")

    def take_over(self, session: str, node: str, address: str, gtid: str, sync: SyncState,
                  handover_index: int) -> SyncState | None:
        """election.I10: take the leader key handed over to us and write our term's first
        acknowledgement set `sync`, in one transaction that checks the handover record and
        the set are unchanged since they were read (at `sync.index`), and deletes the record
        (before we open: a later election must not skip the grace on it). Answers the set as
        written, at its new index (None: a check failed)."""
        index = self._txn_index("leader key take-over", [
            keys.txn_check_index(self.keys.sync, sync.index),
            keys.txn_check_index(self.keys.handover, handover_index),
            keys.txn_lock(self.keys.leader, {"node": node, "address": address, "gtid": gtid},
                          session),
            keys.txn_set(self.keys.sync, sync.doc()),
            keys.txn_delete(self.keys.handover)], self.keys.sync)
        return None if index is None else replace(sync, index=index or sync.index)

    def switchover_for(self, req: dict[str, str] | None, node: str, session: str | None
                       ) -> str | None:
        """The switchover asked of `node` in the term of `session` (the lock holder's):
        "" = to whichever node is best, None = none. A request left for another term (an
        older session of the same node, or another node) is deleted, never carried out."""
        if not req:
            return None
        due = scheduled_at(req)
        if due is not None and due > time.time() and req.get("from") == node \
                and req.get("session") == session:
            return None  # scheduled: not yet
            log.warning("ignoring a switchover request left for another term of the primary "
                        "(%s): deleting it", req)
            try:
                self.clear_switchover()
            except DCSError:
                pass
            return None
        return str(req.get("to", ""))

    def clear_switchover(self) -> None:
        self._call("switchover clear", lambda: self.client.kv.delete(self.keys.switchover))

    def clear_handover(self) -> None:
        self._call("handover clear", lambda: self.client.kv.delete(self.keys.handover))

    def force_failover(self, candidate: str, by: str, reason: str) -> None:
        """election.I7: an operator lets `candidate` take the lock without the positions the
        invariants need. Recorded in the history too."""
        doc = {"candidate": candidate, "by": by, "at": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reason": reason}
        self._call("forced failover", lambda: self.client.kv.put(
            self.keys.forced, json.dumps(doc)))
        self.record_history("forced-failover-requested", doc)

    def set_pause(self, by: str, reason: str) -> None:
        """Maintenance mode on (keys.py `pause`): no automatic failover, mysqld not restarted."""
        doc = {"by": by, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "reason": reason}
        self._call("pause", lambda: self.client.kv.put(self.keys.pause, json.dumps(doc)))
        self.record_history("paused", doc)

    def clear_pause(self, by: str) -> None:
        self._call("resume", lambda: self.client.kv.delete(self.keys.pause))
        self.record_history("resumed", {"by": by})

    def initdb_record(self) -> tuple[int, dict[str, object] | None]:
        """initdb.py's key: (its modify index, its document; None when absent or unreadable
        (an unreadable one counts as present: never run twice))."""
        idx, item = self._call("initdb read", lambda: self.client.kv.get(self.keys.initdb))
        if item is None:
            return 0, None
        try:
            doc = json.loads(item.get("Value") or b"")
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            doc = {"state": "failed", "error": "the key is unreadable"}
        return int(item.get("ModifyIndex") or idx or 0), doc

    def write_initdb(self, doc: dict[str, object], index: int) -> bool:
        """Only if unchanged since read at `index` (0: only if absent)."""
        return bool(self._call("initdb write", lambda: self.client.kv.put(
            self.keys.initdb, json.dumps(doc), cas=index)))

    def request_reinit(self, node: str, by: str, reason: str) -> None:
        doc = {"by": by, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "reason": reason}
        self._call("reinit request", lambda: self.client.kv.put(
            self.keys.reinit + node, json.dumps(doc)))
        self.record_history("reinit-requested", {"node": node, **doc})

    def clear_reinit(self, node: str) -> None:
        self._call("reinit clear", lambda: self.client.kv.delete(self.keys.reinit + node))

    def clear_forced(self) -> None:
        self._call("forced failover clear", lambda: self.client.kv.delete(self.keys.forced))

    def record_history(self, kind: str, doc: dict[str, Any]) -> None:
        """One entry of the cluster's history (keys.py), and the oldest beyond HISTORY_KEEP
        deleted (entries are rare: a promotion, a forced decision)."""
        at = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}"
        entry = {"kind": kind, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)), **doc}
        self._call("history record", lambda: self.client.kv.put(
            f"{self.keys.history}{stamp}-{kind}", json.dumps(entry)))
        names = sorted(self._call("history list", lambda: self.client.kv.get(
            self.keys.history, keys=True))[1] or [])
        for old in names[:max(0, len(names) - HISTORY_KEEP)]:
            self._call("history trim", functools.partial(self.client.kv.delete, old))

    def record_promotion(self, kind: str, doc: dict[str, Any]) -> int:
        """A new primary (or Galera writer) in the history, numbered: the cluster's timeline,
        one more than the last promotion recorded (1 for the first). Returns the number."""
        n = self.timeline() + 1
        self.record_history(kind, {**doc, "timeline": n})
        return n

    def timeline(self) -> int:
        """The number of the last promotion in the history (0: none recorded)."""
        names = sorted(self._call("history list", lambda: self.client.kv.get(
            self.keys.history, keys=True))[1] or [])
        last = next((n for n in reversed(names) if n.endswith(PROMOTIONS)), None)
        if last is None:
            return 0
        _, item = self._call("history read", lambda: self.client.kv.get(last))
        try:
            n = int(json.loads((item or {}).get("Value") or b"{}").get("timeline", 0))
        except (ValueError, TypeError, AttributeError):
            n = 0
        return n or sum(1 for k in names if k.endswith(PROMOTIONS))

    def record_promotion_soon(self, kind: str, doc: dict[str, Any]) -> None:
        """record_promotion from a thread of its own: a new primary opens for writes without
        waiting on the history's three requests; a failure is logged, never raised."""
        def run() -> None:
            try:
                self.record_promotion(kind, doc)
            except DCSError as exc:
                log.warning("the cluster's history does not record this promotion: %s", exc)

        threading.Thread(target=run, name="history", daemon=True).start()

    def history(self) -> list[dict[str, Any]]:
        """The cluster's history, oldest first (entries releases before 0.2 wrote under the
        watched prefix included); an unreadable entry is shown as such, never skipped."""
        out: list[tuple[str, dict[str, Any]]] = []
        for prefix in (self.keys.history_legacy, self.keys.history):
            _, items = self._call("history read", functools.partial(
                self.client.kv.get, prefix, recurse=True))
            for item in items or []:
                name = str(item["Key"])[len(prefix):]
                try:
                    doc = json.loads(item.get("Value") or b"")
                except ValueError:
                    doc = None
                if not isinstance(doc, dict):
                    doc = {"kind": "unreadable", "key": str(item["Key"])}
                if "at" not in doc:
                    doc["at"] = _stamp_time(name)
                out.append((name, doc))
        return [doc for _, doc in sorted(out, key=lambda e: e[0])]

    def write_config(self, doc: dict[str, str], index: int) -> bool:
        """The shared settings (config.ClusterSettings), if unchanged since read at `index`
        (0: only if there are none yet, the cluster's first boot seeding them)."""
        return self._txn("cluster settings write", [
            keys.txn_check_index(self.keys.config, index),
            keys.txn_set(self.keys.config, doc)])

    def register_member(self, node: str, doc: dict[str, str]) -> None:
        """The durable membership: every node that ever joined, with its server_id and data id
        (the census after a full-cluster restart, and server_id uniqueness)."""
        self._call("member record", lambda: self.client.kv.put(
            self.keys.members + node, json.dumps(doc, sort_keys=True)))

    # --- Galera (galera.py) ----------------------------------------------------------------

    def publish_census(self, node: str, doc: dict[str, Any]) -> None:
        """Our census document (galera.G2): durable, not tied to a session, so that a node
        whose supervisor is gone still counts, with what it last said."""
        self._call("census publish", lambda: self.client.kv.put(
            self.keys.galera_state + node, json.dumps(doc, sort_keys=True)))

    def claim_bootstrap(self, doc: dict[str, Any], record_index: int,
                        census: dict[str, int]) -> bool:
        """Write the Galera record (galera.G1, G3) if it is unchanged since read at
        `record_index` (0: it must not exist) and so is every census document the choice was
        made from (node -> its index): one atomic decision, however many nodes race for it."""
        ops = [keys.txn_check_index(self.keys.galera_cluster, record_index)]
        ops += [keys.txn_check_index(self.keys.galera_state + n, i) for n, i in census.items()]
        ops.append(keys.txn_set(self.keys.galera_cluster, doc))
        return self._txn("Galera bootstrap claim", ops)

    def force_bootstrap(self, node: str, by: str, reason: str) -> None:
        doc = {"node": node, "by": by, "reason": reason,
               "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._call("forced bootstrap", lambda: self.client.kv.put(
            self.keys.galera_force, json.dumps(doc)))
        self.record_history("galera-forced-bootstrap-requested", doc)

    def clear_force_bootstrap(self) -> None:
        self._call("forced bootstrap clear",
                   lambda: self.client.kv.delete(self.keys.galera_force))

    def acquire_join(self, session: str, node: str) -> bool:
        """One join (state transfer) at a time: nodes that join together on 2 cores stalled
        Galera's view installation and split the component (seen on this test bed)."""
        return bool(self._call("join lock acquire", lambda: self.client.kv.put(
            self.keys.galera_joining, json.dumps({"node": node}), acquire=session)))

    def acquire_writer(self, session: str, node: str, address: str) -> bool:
        """The leader key for a Galera writer (no acknowledgement set to check)."""
        return self._txn("writer lock acquire", [keys.txn_lock(
            self.keys.leader, {"node": node, "address": address}, session)])

    # --- election positions -------------------------------------------------------------------

    def publish_position(self, session: str, node: str, gtid: str, data: str, *, term: int,
                         can_apply: bool = True, primary: bool = False) -> None:
        """Our GTID position and data id for the election of `term` (election.I5), in a key
        tied to our session (it vanishes when we do, so only reachable nodes' positions
        count). Only this node publishes under its name: a key held by another session is an
        earlier run's of this node (its supervisor restarted before that session expired),
        and is replaced."""
        key = self.keys.positions + node
        doc = json.dumps({"gtid": gtid, "data": data, "can_apply": can_apply, "term": term,
                          **({"primary": True} if primary else {})})
        if self._call("position publish", lambda: self.client.kv.put(key, doc, acquire=session)):
            return
        log.info("the election position %s is still held by an earlier session of this node "
                 "(its supervisor restarted): replacing it", key)
        self.clear_position(node)
        if not self._call("position publish", lambda: self.client.kv.put(key, doc,
                                                                         acquire=session)):
            raise DCSError(f"could not publish our position under {key}: the key is held by "
                           f"another session (is a second node running as {node}?)")

    def clear_position(self, node: str) -> None:
        self._call("position clear",
                   lambda: self.client.kv.delete(self.keys.positions + node))

    # --- snapshots -----------------------------------------------------------------------------

    def create_snapshot_session(self, node: str, ttl: float = 15, what: str = "snapshot"
                                ) -> str:
        """A session for a cluster-wide background lock (the snapshot's, the binary-log
        archiver's): tied to the node's serfHealth only (a busy mysqld must not cost the lock),
        renewed while the work runs, and deleted with its key when the node or the supervisor
        dies."""
        body = {"Name": f"{self.service_name}-{what}-{node}", "LockDelay": "0s",
                "Behavior": "delete", "TTL": f"{int(ttl)}s", "NodeChecks": ["serfHealth"]}
        sid = self._call(f"{what} session create", lambda: self.client.http.put(
            consul.callback.CB.json(is_id=True), "/v1/session/create",
            params=self._params(), data=json.dumps(body)))
        return str(sid)

    def acquire_snapshot_lock(self, session: str, node: str) -> bool:
        return bool(self._call("snapshot lock acquire", lambda: self.client.kv.put(
            self.snapshot_lock_key, json.dumps({"node": node}), acquire=session)))

    def snapshot_lock_holder(self) -> str | None:
        _, item = self._call("snapshot lock read",
                             lambda: self.client.kv.get(self.snapshot_lock_key))
        if not item or not item.get("Session") or not item.get("Value"):
            return None
        try:
            return str(json.loads(item["Value"])["node"])
        except (ValueError, KeyError, TypeError):
            return "?"

    def release_snapshot_lock(self, session: str) -> None:
        self._call("snapshot lock release", lambda: self.client.kv.put(
            self.snapshot_lock_key, "", release=session))
        self._call("snapshot session destroy", lambda: self.client.session.destroy(session))

    def snapshot_pointer(self) -> dict[str, Any] | None:
        """The latest good snapshot ({id, gtid, node, primary, binlog_file, finished_at}), or
        None when the cluster has none yet."""
        _, item = self._call("snapshot pointer read",
                             lambda: self.client.kv.get(self.snapshot_pointer_key))
        if not item or not item.get("Value"):
            return None
        try:
            doc = json.loads(item["Value"])
        except ValueError as exc:
            raise DCSError(f"the snapshot pointer {self.snapshot_pointer_key} is unreadable "
                           f"({exc}); delete the key, the next snapshot rewrites it") from exc
        return doc if isinstance(doc, dict) else None

    def set_snapshot_pointer(self, doc: dict[str, Any], session: str) -> bool:
        """Move the pointer to a new snapshot, only if `session` still holds the snapshot
        lock (one transaction). A node whose lock went (its session expired during a long
        upload) may have had its objects cleaned up by the next holder: its snapshot must never
        become the latest. False: the lock is not ours, nothing was written."""
        return self._txn("snapshot pointer write", [
            keys.txn_check_session(self.snapshot_lock_key, session),
            keys.txn_set(self.snapshot_pointer_key, doc)])

    def mark_snapshot_bad(self, snapshot_id: str, why: str, node: str) -> None:
        """Record that snapshot `snapshot_id` cannot be restored. When the pointer names it,
        the pointer says so too (compare-and-set, so a newer pointer is never overwritten): the
        schedule sees a snapshot due at once, and every node skips it."""
        doc = {"why": why[:500], "by": node, "at": time.time()}
        self._call("snapshot bad mark", lambda: self.client.kv.put(
            self.keys.snapshot_bad + snapshot_id, json.dumps(doc)))
        index, item = self._call("snapshot pointer read",
                                 lambda: self.client.kv.get(self.snapshot_pointer_key))
        try:
            pointer = json.loads(item["Value"]) if item and item.get("Value") else None
        except ValueError:
            pointer = None
        if isinstance(pointer, dict) and pointer.get("id") == snapshot_id \
                and not pointer.get("bad"):
            pointer["bad"] = doc["why"]
            self._call("snapshot pointer mark", lambda: self.client.kv.put(
                self.snapshot_pointer_key, json.dumps(pointer), cas=item["ModifyIndex"]))

    def bad_snapshots(self) -> dict[str, dict[str, Any]]:
        """{snapshot id: {why, by, at}} of every snapshot marked bad."""
        _, items = self._call("snapshot bad marks read", lambda: self.client.kv.get(
            self.keys.snapshot_bad, recurse=True))
        out: dict[str, dict[str, Any]] = {}
        for item in items or ():
            name = str(item["Key"])[len(self.keys.snapshot_bad):]
            try:
                doc = json.loads(item.get("Value") or b"{}")
            except ValueError:
                doc = {}
            out[name] = doc if isinstance(doc, dict) else {}
        return out

    def forget_bad_snapshot(self, snapshot_id: str) -> None:
        self._call("snapshot bad mark delete", lambda: self.client.kv.delete(
            self.keys.snapshot_bad + snapshot_id))

    # --- the binary-log archive ------------------------------------------------------------

    def acquire_archive_lock(self, session: str, node: str) -> bool:
        return bool(self._call("archive lock acquire", lambda: self.client.kv.put(
            self.keys.archive_lock, json.dumps({"node": node}), acquire=session)))

    def archive_lock_held(self) -> bool:
        """Whether some node's session holds the archiver's lock (one read: the others do not
        open a session every round just to be refused)."""
        _, item = self._call("archive lock read",
                             lambda: self.client.kv.get(self.keys.archive_lock))
        return bool(item and item.get("Session"))

    def release_archive_lock(self, session: str) -> None:
        self._call("archive lock release", lambda: self.client.kv.put(
            self.keys.archive_lock, "", release=session))
        self._call("archive session destroy", lambda: self.client.session.destroy(session))

    def archive_state(self) -> tuple[int, dict[str, Any] | None]:
        """(ModifyIndex, document) of how far the archive reaches; (0, None) before the
        first segment."""
        _, item = self._call("archive state read",
                             lambda: self.client.kv.get(self.keys.archive_state))
        if not item or not item.get("Value"):
            return (int(item["ModifyIndex"]) if item else 0), None
        try:
            doc = json.loads(item["Value"])
        except ValueError as exc:
            raise DCSError(f"the archive state {self.keys.archive_state} is unreadable ({exc}); "
                           "delete the key: the archiver starts a new chain, with a gap the "
                           "next snapshot closes") from exc
        return int(item["ModifyIndex"]), doc if isinstance(doc, dict) else None

    def write_archive_state(self, session: str, doc: dict[str, Any], index: int) -> bool:
        """Only while `session` holds the archiver's lock and nobody wrote the state since it
        was read at `index`: a late archiver can never move the archive back."""
        return self._txn("archive state write", [
            keys.txn_check_session(self.keys.archive_lock, session),
            keys.txn_check_index(self.keys.archive_state, index),
            keys.txn_set(self.keys.archive_state, doc)])

    # --- server ids -----------------------------------------------------------------------------

    def next_server_id(self, attempts: int = 50) -> int:
        """Allocate a cluster-unique server_id from a compare-and-set counter."""
        # A counter behind what nodes hold (Consul rebuilt from empty: the counter went, the
        # nodes kept theirs) would hand out a server_id in use, and a replica skips the events
        # that carry its own: continue from the highest any member holds (read once).
        held = self.highest_server_id()
        for _ in range(attempts):
            _, item = self._call("server-id counter read",
                                 lambda: self.client.kv.get(self.server_id_key))
            current = int(item["Value"]) if item and item.get("Value") else 0
            cas = int(item["ModifyIndex"]) if item else 0
            if held > current:
                log.warning("the server-id counter %s says %d but a member holds server_id "
                            "%d (Consul's data was lost?): continuing from %d",
                            self.server_id_key, current, held, held)
            new = max(current, held) + 1
            if self._call("server-id counter update",
                          functools.partial(self.client.kv.put, self.server_id_key,
                                            str(new), cas=cas)):
                return new
        raise DCSError(f"could not allocate a server_id from {self.server_id_key} after "
                       f"{attempts} attempts (too many nodes starting at once?)")


    def highest_server_id(self) -> int:
        """The highest server_id a node says it holds: the member records and the service
        meta of every registered node (0 when none)."""
        _, items = self._call("member records read", lambda: self.client.kv.get(
            self.keys.members, recurse=True))
        ids = []
        for item in items or []:
            try:
                ids.append(int(json.loads(item.get("Value") or b"{}").get("server_id", 0)))
            except (ValueError, TypeError, AttributeError):
                continue
        _, registered = self.members()
        for m in registered:
            try:
                ids.append(int(dict(m.meta).get("server_id", 0)))
            except ValueError:
                continue
        return max(ids, default=0)


class MemberRecord:
    """This node's durable member record (members/<node>: its server_id, data id, address):
    written when it changes, and again when the keys no longer show it after they did
    (Consul rebuilt from empty)."""

    def __init__(self, consul: Consul, node: str) -> None:
        self.consul = consul
        self.node = node
        self.written: dict[str, str] | None = None
        self.seen = False  # a read of the keys showed it since it was written

    def write(self, doc: dict[str, str]) -> None:
        if doc != self.written:
            self.consul.register_member(self.node, doc)
            self.written = doc
            self.seen = False

    def forget(self) -> None:
        """Write it at the next chance, changed or not (the catalog forgot this node)."""
        self.written = None

    def gone(self, present: bool) -> bool:
        """`present`: the last read of the keys holds it. True when it must be written again
        (it was there, and is not)."""
        if present:
            self.seen = self.written is not None
            return False
        if not (self.seen and self.written is not None):
            return False
        log.warning("our member record %s%s is gone from Consul (its servers lost their "
                    "data?): writing it again", self.consul.keys.members, self.node)
        self.written, self.seen = None, False
        return True


class Watcher(threading.Thread):
    """A blocking-query loop that publishes an event whenever the watched value changes."""

    def __init__(self, name: str, fetch: Callable[[int | None], tuple[int, Any]],
                 bus: EventBus, code: Code, stop: threading.Event, wait: str = "20s") -> None:
        super().__init__(name=name, daemon=True)
        self.fetch = fetch
        self.bus = bus
        self.code = code
        self.stop_event = stop
        self.wait = wait

    def run(self) -> None:
        index: int | None = None
        last: Any = object()
        failures = 0
        while not self.stop_event.is_set():
            try:
                new_index, value = self.fetch(index)
            except DCSError as exc:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("%s: %s (retrying every second)", self.name, exc)
                index = None
                self.stop_event.wait(1.0)
                continue
            failures = 0
            # An index that goes backwards means Consul's state was reset: start over.
            index = new_index if index is None or new_index >= index else None
            if value != last:
                last = value
                self.bus.publish(Event(self.code, "consul", value))


class AgentRejoin(threading.Thread):
    """The local agent answered "No known Consul servers": it marked every server failed
    (this host was cut off from them, or they restarted meanwhile) and, left to itself, tries
    a failed server again only every 30 s (serf's reconnect interval), or learns it is back
    from the next full gossip exchange: up to half a minute after the network healed, with
    this node unable to renew its session, vote or publish its position (a member of the
    acknowledgement set it is, the cluster waits for it). So ask the agent to join the
    servers again, as an operator would (`consul join`), every REJOIN_EVERY seconds while
    calls keep failing that way. A join blocks up to memberlist's TCP time-out while the cut
    lasts: this thread waits for it, never the loop."""

    def __init__(self, consul: Consul, stop: threading.Event) -> None:
        super().__init__(name="agent-rejoin", daemon=True)
        self.consul = consul
        self.stop_event = stop
        self.failures = 0

    def run(self) -> None:
        lost = self.consul.servers_lost
        while not self.stop_event.is_set():
            if not lost.wait(1.0):
                continue
            lost.clear()
            self.rejoin()
            self.stop_event.wait(REJOIN_EVERY)

    def rejoin(self) -> bool:
        """Ask the agent to join every server; True when one join succeeded."""
        joined, failed = [], []
        for server in self.consul.servers:
            try:
                self.consul._call("agent join",
                                  functools.partial(self.consul.client.agent.join, server))
                joined.append(server)
            except DCSError as exc:
                why = str(exc).removeprefix(f"Consul at {self.consul.address}: agent join "
                                            "failed: ")
                failed.append(f"{server} ({why})")
        if joined:
            log.warning("the local Consul agent knew no Consul server (it marked them failed "
                        "while this node was cut off from them, and would try them again only "
                        "within 30 s): asked it to join %s again: joined%s",
                        ", ".join(joined), f"; not {', '.join(failed)}" if failed else "")
            self.failures = 0
            return True
        self.failures += 1
        if self.failures == 1 or self.failures % 20 == 0:
            log.warning("the local Consul agent knows no Consul server, and could not join "
                        "%s (%d tries): is this node still cut off from them? Retrying every "
                        "%.0f s while it says so", ", ".join(failed), self.failures,
                        REJOIN_EVERY)
        return False


# Consul's answers when a session names a node or a check its catalog does not hold
FORGOTTEN = ("Missing node registration", "Missing check")
RESYNC_EVERY = 3.0
REJOIN_EVERY = 2.0


def best_effort(steps: list[tuple[str, Callable[[], None]]]) -> None:
    """Consul steps of a graceful stop: each is tried; one that fails is said and left to
    Consul (a session expires, a registration is deregistered after its check fails)."""
    for what, fn in steps:
        try:
            fn()
        except DCSError as exc:
            log.warning("could not %s: %s (Consul will expire it)", what, exc)


def agent_config(*, node_name: str, bind: str, join: list[str], data_dir: str,
                 datacenter: str = "", encrypt: str = "", token: str = "", ca_file: str = ""
                 ) -> dict[str, Any]:
    """Settings of the local Consul client agent (CONSUL_AGENT mode): it joins the servers
    and serves the supervisor on loopback (plain http there: nothing leaves the container).
    `encrypt`: the gossip key; `token`: the ACL token the agent itself uses (as its default
    and agent token); `ca_file`: the CA its RPC to the servers verifies them against."""
    extra: dict[str, Any] = {}
    if encrypt:
        extra["encrypt"] = encrypt
    if token:
        extra["acl"] = {"enabled": True, "tokens": {"default": token, "agent": token}}
    if ca_file:
        extra["tls"] = {"defaults": {"ca_file": ca_file, "verify_outgoing": True},
                        "internal_rpc": {"verify_server_hostname": False}}
    return {
        **extra,
        "node_name": node_name, "datacenter": datacenter or "dc1", "data_dir": data_dir,
        "server": False,
        "bind_addr": bind, "advertise_addr": bind, "client_addr": "127.0.0.1",
        "retry_join": join, "retry_interval": "1s", "leave_on_terminate": True,
        "disable_update_check": True, "enable_script_checks": False,
        "ports": {"grpc": -1, "grpc_tls": -1}, "ui_config": {"enabled": False},
        "log_level": "WARN",
        # Faster failure detection on a LAN than Consul's WAN-safe defaults (1s / 500ms / 4).
        # memberlist declares a suspect dead after suspicion_mult * probe_interval (1.2 s)
        # once another member confirms it, and a silent node (no reset, nothing refused) is
        # first suspected a probe round or two after it went silent: 1.8-2.6 s in all,
        # measured (3.0 s with 500 ms probes; bench/failover.py "node silent"). Each probe
        # round costs the agent little CPU (1 s probes measured 0.05 % of a core below
        # 500 ms ones; 400 ms ones no more than 500 ms ones, within the noise).
        "gossip_lan": {"probe_interval": "400ms", "probe_timeout": "200ms",
                       "suspicion_mult": 3},
    }
