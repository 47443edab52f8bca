"""Whether this node's data volume counts as full: a fault like any other (the safety issue's
behaviour 7; galera.G10). Less than DISK_MIN_FREE free, or mysqld said lately that it waits
for space (a volume it filled by itself, below what statvfs shows as the reserve)."""

from __future__ import annotations

import os
from pathlib import Path

from .utils import Clock, format_size

STALL_MEMORY = 30.0  # seconds a "No space left on device" from mysqld counts


class DiskWatch:
    def __init__(self, datadir: Path, min_free: int, clock: Clock) -> None:
        self.datadir = datadir
        self.min_free = min_free
        self.clock = clock
        self.free: int | None = None  # bytes free at the last look (None: unknown)
        self.stall_at = -STALL_MEMORY  # when mysqld last said it waits for disk space

    def line(self, line: str) -> None:
        """One line of mysqld's output (its output thread)."""
        if "No space left on device" in line or "Disk is full" in line:
            self.stall_at = self.clock.monotonic()

    def full(self) -> str:
        """Why the volume counts as full now ("" = it has room)."""
        try:
            st = os.statvfs(self.datadir)
            self.free = st.f_bavail * st.f_frsize
        except OSError:
            self.free = None
        if self.free is not None and self.free < self.min_free:
            return (f"the data volume has {format_size(self.free)} free "
                    f"(DISK_MIN_FREE {format_size(self.min_free)})")
        if self.clock.monotonic() - self.stall_at < STALL_MEMORY:
            return "mysqld waits for space on the data volume (No space left on device)"
        return ""
