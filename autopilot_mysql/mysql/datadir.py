"""The data directory: what state it is in, first-boot initialization that survives kill -9 at
any moment, and the node's own small state file (its server_id).

First boot is a little state machine recorded by two marker files inside the data directory:

    (empty) --write autopilot-init.pending--> install-db, create users --write
    autopilot-init.done, remove .pending--> INITIALIZED

A directory with `.pending` and no `.done` was interrupted: nothing in it was ever served to a
client (the temporary server runs with --skip-networking), so it is wiped and initialized again.
A directory that holds data but no marker (say, from the official MariaDB image) is adopted as
it is and never re-initialized. Anything else we do not recognise is refused.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from ..exceptions import DataDirError, MySQLError
from . import osuser

log = logging.getLogger(__name__)

PENDING = "autopilot-init.pending"
DONE = "autopilot-init.done"
STATE = "autopilot.json"
# state file keys about the data, not the node (a rebuild drops them): its errant
# transactions, the role its binary log was written in, the release it was last upgraded to,
# and whether the cluster's initdb scripts are due on it (initdb.py: data born empty here only)
PER_DATA = ("errant", "last_role", "mariadb_version", "initdb_due")
IGNORED = {"lost+found", STATE}  # present on fresh volumes, or ours and kept across re-inits


class DataDirState(StrEnum):
    EMPTY = "empty"
    INTERRUPTED = "interrupted"  # a first boot was killed halfway: redo from scratch
    INITIALIZED = "initialized"  # ours, complete
    ADOPTED = "adopted"  # MariaDB data from elsewhere: use as is
    UNKNOWN = "unknown"  # files that are not a MariaDB data directory: refuse


def inspect(datadir: Path) -> DataDirState:
    if not datadir.exists():
        return DataDirState.EMPTY
    names = {p.name for p in datadir.iterdir()}
    if DONE in names:
        return DataDirState.INITIALIZED
    if PENDING in names:
        return DataDirState.INTERRUPTED
    if not names - IGNORED:
        return DataDirState.EMPTY
    if "mysql" in names and (datadir / "mysql").is_dir():
        return DataDirState.ADOPTED
    return DataDirState.UNKNOWN


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


def data_id(datadir: Path) -> str:
    """This data directory's id (election.py: a member of the acknowledgement set is a node
    *with* its data). Minted by mark_done; a directory from before data ids gets one now."""
    state = read_node_state(datadir)
    current = state.get("data_id")
    if isinstance(current, str) and current:
        return current
    new = uuid.uuid4().hex
    write_node_state(datadir, {**state, "data_id": new})
    return new


def read_node_state(datadir: Path) -> dict[str, object]:
    try:
        data = json.loads((datadir / STATE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise DataDirError(f"{datadir / STATE} is unreadable ({exc}); it holds this node's "
                           "server_id. Restore it from a backup, or delete it to get a new "
                           "server_id from Consul") from exc
    return data if isinstance(data, dict) else {}


def recorded_errant(datadir: Path) -> tuple[str, ...]:
    """The errant transactions recorded for this data (node.py), () when none."""
    found = read_node_state(datadir).get("errant")
    return tuple(str(g) for g in found) if isinstance(found, list) else ()


def write_node_state(datadir: Path, state: dict[str, object]) -> None:
    datadir.mkdir(parents=True, exist_ok=True)
    _write_durably(datadir / STATE, json.dumps(state, indent=1, sort_keys=True) + "\n")


def empty_dir(path: Path, keep: frozenset[str] | set[str] = frozenset()) -> None:
    """Remove everything in `path` but the names in `keep` (the directory itself stays)."""
    if not path.exists():
        return
    for p in path.iterdir():
        if p.name in keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def wipe_interrupted(datadir: Path) -> None:
    """Remove what an interrupted first boot left, keeping our state file (the server_id)."""
    empty_dir(datadir, IGNORED)
    fsync_dir(datadir)


def mark_pending(datadir: Path, what: str) -> None:
    """Start of a first boot (or a restore): until mark_done, a kill leaves INTERRUPTED."""
    datadir.mkdir(parents=True, exist_ok=True)
    _write_durably(datadir / PENDING, f"{what} started {time.strftime('%Y-%m-%dT%H:%M:%SZ')}\n")


def mark_done(datadir: Path, what: str, *, born_empty: bool = False) -> None:
    """End of a first boot or a restore: the directory holds new data, with a new data id.
    What the state file said about the old data goes with it: its errant transactions and
    the role its binary log was written in (new data counts as a replica's: election.I8).
    `born_empty` (a first boot): the cluster's initdb scripts are due on this data, written
    before the marker so that a kill in between leaves an interrupted first boot."""
    state = {k: v for k, v in read_node_state(datadir).items() if k not in PER_DATA}
    write_node_state(datadir, {**state, "data_id": uuid.uuid4().hex,
                               **({"initdb_due": True} if born_empty else {})})
    _write_durably(datadir / DONE, f"{what} {time.strftime('%Y-%m-%dT%H:%M:%SZ')}\n")
    (datadir / PENDING).unlink(missing_ok=True)
    fsync_dir(datadir)


def initialize(datadir: Path, cnf: Path, socket: Path,
               create_users: Callable[[], None], timeout: float = 120) -> None:
    """First boot: install the system schema, start a socket-only temporary server, run
    `create_users` against it, stop it cleanly, and mark the directory initialized."""
    mark_pending(datadir, "first boot")
    osuser.give(datadir)
    t0 = time.monotonic()
    proc = subprocess.run(
        # As the mysql user already, --user would have it chown the directory (refused);
        # the second socket account (mysql@localhost) is named instead.
        ["mariadb-install-db", f"--defaults-file={cnf}",
         f"--user={osuser.MYSQL}" if osuser.is_root() else
         f"--auth-root-socket-user={osuser.MYSQL}",
         "--auth-root-authentication-method=socket", "--skip-test-db", "--wsrep-on=OFF"],
        capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise MySQLError(f"mariadb-install-db failed (status {proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[-800:]}")
    log.info("first boot: system schema installed in %.1fs", time.monotonic() - t0)
    temp = subprocess.Popen(
        ["mariadbd", f"--defaults-file={cnf}", "--skip-networking", "--skip-slave-start",
         "--skip-log-bin", "--wsrep-on=OFF"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                create_users()
                break
            except MySQLError:
                if temp.poll() is not None or time.monotonic() > deadline:
                    out = temp.stdout.read().decode(errors="replace") if temp.stdout else ""
                    raise MySQLError("the temporary first-boot server did not come up: "
                                     + out.strip()[-800:]) from None
                time.sleep(0.1)
    finally:
        if temp.poll() is None:
            os.killpg(temp.pid, 15)
            try:
                temp.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(temp.pid, 9)
                temp.wait()
    if temp.returncode != 0:
        raise MySQLError(f"the temporary first-boot server exited {temp.returncode} on stop")
    mark_done(datadir, "initialized", born_empty=True)
    log.info("first boot: users created and data directory marked initialized in %.1fs",
             time.monotonic() - t0)
