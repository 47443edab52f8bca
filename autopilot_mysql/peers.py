"""The other nodes' HTTP status, polled in the background: the primary learns from it what each
replica has received (the proofs of election.I3/I4) and whether it follows us. One thread per
peer, each with short time-outs, so a slow or partitioned node never delays the HA loop; the
loop only reads the last answer and its age."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import httpc

log = logging.getLogger(__name__)


# What the primary's keeper decides on (ackset.py): a peer that starts to follow us may join
# the acknowledgement set, one whose data was replaced or that turned errant may not.
DECISIVE = ("leader", "errant", "behind", "data_id")


class Peers:
    def __init__(self, port: int, *, interval: float = 1.0, timeout: float = 0.5,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str], None] | None = None) -> None:
        """`on_change(node)`, from a polling thread: the peer's first answer, or one that
        changed a DECISIVE field (the HA loop wakes on it instead of finding it at its next
        full look: a settled primary looks every few seconds)."""
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.on_change = on_change
        self._lock = threading.Lock()
        self._wanted: dict[str, str] = {}  # node -> address
        self._threads: dict[str, threading.Event] = {}  # node -> its stop event
        self._last: dict[str, tuple[dict[str, Any], float]] = {}
        self._poke = threading.Event()

    def want(self, addresses: Mapping[str, str]) -> None:
        """Poll exactly these nodes from now on (node -> address)."""
        with self._lock:
            for node in list(self._threads):
                if addresses.get(node) != self._wanted.get(node):
                    self._threads.pop(node).set()
                    self._last.pop(node, None)
            self._wanted = dict(addresses)
            for node, address in addresses.items():
                if node not in self._threads:
                    stop = threading.Event()
                    self._threads[node] = stop
                    threading.Thread(target=self._poll, args=(node, address, stop),
                                     name=f"peer-{node}", daemon=True).start()

    def poke(self) -> None:
        """Poll every peer again now (a proof is awaited)."""
        self._poke.set()

    def status(self, node: str, max_age: float) -> dict[str, Any] | None:
        """The peer's last /status document if it is younger than `max_age` seconds."""
        with self._lock:
            got = self._last.get(node)
        if got is None or self.clock() - got[1] > max_age:
            return None
        return got[0]

    def stop(self) -> None:
        self.want({})

    def _poll(self, node: str, address: str, stop: threading.Event) -> None:
        conn = httpc.Connection(address, self.port, self.timeout)
        while not stop.is_set():
            started = self.clock()
            try:
                r = conn.request("GET", "/status")
                if r.ok:
                    doc = r.json()
                    if isinstance(doc, dict):
                        with self._lock:
                            if stop.is_set():
                                break
                            before = self._last.get(node)
                            self._last[node] = (doc, started)  # as old as the request
                        if self.on_change is not None and (before is None or any(
                                before[0].get(k) != doc.get(k) for k in DECISIVE)):
                            self.on_change(node)
            except (OSError, ValueError) as exc:
                log.debug("status of %s (%s): %s", node, address, exc)
            self._poke.wait(self.interval)
            self._poke.clear()
        conn.close()
