"""Events are plain values (a code, a source, an optional payload) put on one queue that the
HA loop drains. Watchers, signal handlers, child-exit threads and the HTTP API only publish;
the loop alone changes state (as in ContainerPilot)."""

from __future__ import annotations

import queue
from dataclasses import dataclass
from enum import StrEnum


class Code(StrEnum):
    PROCESS_EXITED = "process_exited"  # source: process name; payload: exit status
    MEMBERS_CHANGED = "members_changed"  # source: "consul"; payload: tuple[Member, ...]
    LEADER_CHANGED = "leader_changed"  # source: "consul"; payload: holder or None
    SIGNAL = "signal"  # source: signal name (SIGTERM, SIGHUP, ...)
    STOP = "stop"  # a graceful stop was requested
    SWITCHOVER = "switchover"  # source: "api"; payload: (leader, target node or "")
    VIEW_CHANGED = "view_changed"  # source: "mysqld"; payload: Primary or not, None: processed
    PEER_CHANGED = "peer_changed"  # source: the node whose /status answered first or changed
    MYSQLD_READY = "mysqld_ready"  # source: "mysqld": it said it is ready for connections


@dataclass(frozen=True)
class Event:
    code: Code
    source: str
    payload: object = None


class EventBus:
    """SimpleQueue: its put() is reentrant, so signal handlers may publish safely."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def publish(self, event: Event) -> None:
        self._q.put(event)

    def wait(self, timeout: float) -> list[Event]:
        """Block until at least one event arrives or `timeout` passes; return all pending."""
        events: list[Event] = []
        try:
            events.append(self._q.get(timeout=max(timeout, 0)))
        except queue.Empty:
            return events
        while True:
            try:
                events.append(self._q.get_nowait())
            except queue.Empty:
                return events
