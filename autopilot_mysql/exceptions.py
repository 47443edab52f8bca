"""The project's one exception tree. Every error a user or operator can cause ends up here,
with a message that names the cause and the fix; `cli` turns them into exit codes."""

from __future__ import annotations


class AutopilotError(Exception):
    """Base of every error autopilot-mysql raises on purpose."""

    exit_code = 1


class ConfigError(AutopilotError):
    """One or more settings are missing or malformed. Raised before anything is touched."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} configuration problem(s); nothing was started or "
                         f"changed:\n{lines}")


class DCSError(AutopilotError):
    """Consul could not be reached or refused a call (within the retry deadline)."""


class CatalogForgot(DCSError):
    """Consul's catalog does not know this node or its health check although its agent does:
    the servers were rebuilt from empty (their data lost), or the agent has not synced yet.
    A session tied to those checks cannot be created until they are registered again."""


class MySQLError(AutopilotError):
    """The local MariaDB server refused or failed an operation."""


class DataDirError(AutopilotError):
    """The data directory is in a state we must not touch automatically."""


class ProcessError(AutopilotError):
    """A managed child process could not be started or stopped."""


class SnapshotError(AutopilotError):
    """A snapshot could not be taken, stored, found, verified or restored."""


class SnapshotCorrupt(SnapshotError):
    """A stored snapshot cannot be restored by anyone, however often it is tried: its data
    object is missing, or does not match its manifest (size, SHA-256, GTID position). The
    caller marks it bad in Consul (a new snapshot then replaces it) and tries another."""
