"""Fast eviction of a Galera member whose mysqld is gone (galera.G11).

When a member's process dies, Galera's group layer still counts it in the view until
evs.suspect_timeout passes (3 s here), and no node of the component can commit meanwhile,
whoever the writer is. mysqld says at once that it lost its connection to a peer ("nonlive
peers: tcp://host:4567", read from its output by the supervisor); this thread then knocks on
that peer's Galera port. A refusal (RST: the host's kernel answers, nothing listens) is proof
that the member's mysqld is not running, since a live member always listens there, so it is
evicted (`evs.evict`) and the component goes on within a few hundred milliseconds. A timeout or
an accepted connection proves nothing (paused, partitioned, slow): Galera's own timeout decides.
Once the member left the view the eviction list is cleared, on every node (those that only
learnt of the eviction from a peer see it in their status): the member's mysqld, restarted,
joins under a new identity anyway.

A thread of its own with its own connection: the mysqld output thread must never block, and
the HA loop may be in a slow Consul call.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import galera
from .exceptions import MySQLError
from .mysql.server import LocalServer
from .utils import nothing_listens, port_refused

log = logging.getLogger(__name__)
LEAVE_WAIT = 10.0  # seconds the evicted member gets to leave our view before we stop looking
CLEAR = ("", 0, 0)  # the task that tidies the eviction list
MEMBERS_SQL = "SELECT node_uuid, node_incoming_address, node_name FROM mysql.wsrep_cluster_members"


class Evictor:
    def __init__(self, sock: Path, stop: threading.Event,
                 knock: Callable[[str, int], bool] = port_refused) -> None:
        self.own = LocalServer(sock, connect_timeout=0.5, read_timeout=2.0)
        self.stop = stop
        self.knock = knock
        # (host, port, peers lost at once) to knock on, or CLEAR: tidy the eviction list
        self.todo: queue.Queue[tuple[str, int, int]] = queue.Queue()
        self.pending: set[tuple[str, int]] = set()
        self.lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self.run, name="galera-evictor", daemon=True).start()

    def lost(self, peers: tuple[tuple[str, int], ...]) -> None:
        """mysqld lost its connection to these Galera addresses, every peer it lost (called
        from its output thread: never blocks)."""
        self._put([(host, port, len(peers)) for host, port in peers])

    def evicting(self) -> None:
        """mysqld evicts a member (its log says so when we asked; its eviction list shows a
        peer's eviction it learnt of): clear the list once the member left the view."""
        self._put([CLEAR])

    def _put(self, tasks: list[tuple[str, int, int]]) -> None:
        with self.lock:
            for task in tasks:
                if task[:2] not in self.pending:
                    self.pending.add(task[:2])
                    self.todo.put(task)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                task = self.todo.get(timeout=1.0)
            except queue.Empty:
                continue
            host, port, lost = task
            with self.lock:
                self.pending.discard((host, port))
            try:
                if task == CLEAR:
                    self.clear()
                else:
                    self.handle(host, port, lost)
            except MySQLError as exc:
                log.info("galera: eviction step failed (%s); Galera's own timeout "
                         "(evs.suspect_timeout) removes a member that is gone", exc)

    def handle(self, host: str, port: int, lost: int = 1) -> None:
        if lost != 1 or not nothing_listens(host, (port,), self.knock, self.stop.wait):
            return  # alive, or silent: not ours to judge
        st = self._status()
        target = galera.evictee(host, lost, self._members(), st.get("wsrep_gcomm_uuid", ""),
                                st.get("wsrep_cluster_status") == "Primary",
                                _uuids(st.get("wsrep_evs_evict_list", "")))
        if target is None:
            return
        uuid, name = target
        log.warning("galera: %s's Galera port %s:%d refuses connections (its mysqld is gone): "
                    "evicting it (%s) from the component now instead of waiting out "
                    "evs.suspect_timeout, during which nobody can commit (G11)",
                    name, host, port, uuid)
        self.own.execute("SET GLOBAL wsrep_provider_options = %s", (f"evs.evict={uuid}",))

    def clear(self) -> None:
        """Empty the eviction list once none of its members is in our view any more (a
        restarted mysqld has a new identity; one evicted alive by mistake may come back)."""
        deadline = time.monotonic() + LEAVE_WAIT
        while True:
            listed = _uuids(self._status().get("wsrep_evs_evict_list", ""))
            if not listed:
                return
            still = listed & {u for u, _, _ in self._members()}
            if not still or time.monotonic() >= deadline:
                break
            if self.stop.wait(0.1):
                return
        self.own.execute("SET GLOBAL wsrep_provider_options = %s", ("evs.evict=",))
        if still:
            log.warning("galera: %s still in our view %.0fs after its eviction; eviction "
                        "list cleared, Galera's own timeout decides", ", ".join(sorted(still)),
                        LEAVE_WAIT)
        else:
            log.info("galera: evicted %s left the component; eviction list cleared (a "
                     "restarted mysqld joins under a new identity)", ", ".join(sorted(listed)))

    def _status(self) -> dict[str, str]:
        rows = self.own.execute("SHOW GLOBAL STATUS WHERE variable_name IN "
                                "('wsrep_cluster_status', 'wsrep_gcomm_uuid', "
                                "'wsrep_evs_evict_list')")
        return {str(k).lower(): str(v) for k, v in rows}

    def _members(self) -> tuple[tuple[str, str, str], ...]:
        return tuple((str(u), str(a), str(n)) for u, a, n in self.own.execute(MEMBERS_SQL))


def _uuids(evict_list: str) -> frozenset[str]:
    """wsrep_evs_evict_list's UUIDs."""
    return frozenset(re.split(r"[,\s]+", evict_list.strip())) - {""}
