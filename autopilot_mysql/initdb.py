"""/docker-entrypoint-initdb.d, as the official image runs it: `*.sql`, `*.sql.gz`, `*.sql.xz`,
`*.sql.zst` and `*.sh` files in name order, once, at the cluster's initialization: on the first
primary (Galera: the first writer) once it is open for writes, so that what they write goes to
the binary log and every replica gets it. Never on a replica, never twice, and never on data
that was not born empty: a key in Consul (`service/<SERVICE_NAME>/initdb`) says who runs them,
and then that they ran or why not.

    {"state": "running", "by": NODE, "at": TIME}          claimed (check-and-set: one node)
    {"state": "done", "by": NODE, "at": TIME, "files": [...]}   ([] on a cluster born with none)
    {"state": "skipped", "by": NODE, "at": TIME, "why": W}      the cluster held data already
    {"state": "failed", "by": NODE, "at": TIME, "file": F, "error": E}
    {"state": "rerun"}                                     the operator's: run them all again

As in the official image, the scripts belong to the initialization. The first primary runs them
only when its own data directory was initialized empty by this node (datadir.initialize leaves
`initdb_due` in the node's state file; a restore, a clone or a state transfer drops it). A
cluster that held data when the key was first written (data adopted from elsewhere, or a cluster
that began before this release) records `skipped`; scripts added after the initialization are
named in a warning, never run: a dump's `DROP TABLE IF EXISTS` must not reach live data because
a file appeared in a mounted directory, or because Consul lost its keys.

A run that failed or was cut short (the primary died halfway) is not run again by anyone:
half of a script applied, applied twice, can do harm the operator must judge. The log and
/status say so and what to do (fix by hand, then set the key to {"state": "rerun"} to run the
scripts again). SQL runs through the mariadb client over the local socket
as root, in MARIADB_DATABASE when set; a `.sh` runs with the container's environment plus
MYSQL_HOME (the rendered my.cnf's [client] group names the socket, so a plain `mariadb`
reaches the server), as the official image sources them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .config import Settings
from .dcs import Consul
from .exceptions import DataDirError, DCSError
from .mysql import datadir as dd
from .mysql import osuser

log = logging.getLogger(__name__)

SUFFIXES = {".sql": None, ".sql.gz": ["gzip", "-dc"], ".sql.xz": ["xz", "-dc"],
            ".sql.zst": ["zstd", "-dc"], ".sh": None}


def scripts(directory: Path) -> list[Path]:
    """The files to run, in name order (others are named in a warning, never run)."""
    try:
        entries = sorted(p for p in directory.iterdir() if p.is_file())
    except OSError:
        return []
    out = []
    for p in entries:
        if any(p.name.endswith(s) for s in SUFFIXES):
            out.append(p)
        else:
            log.warning("ignoring %s in %s: not one of %s", p.name, directory,
                        ", ".join(SUFFIXES))
    return out


def run_file(path: Path, socket: Path, database: str, timeout: float = 3600) -> None:
    """Run one file against the local server; raises RuntimeError with its last words."""
    # The client finds the socket in the rendered my.cnf's [client] group ($MYSQL_HOME/my.cnf,
    # MYSQL_RUNDIR: the supervisor writes it there) and in MYSQL_UNIX_PORT.
    env = {**os.environ, "MYSQL_UNIX_PORT": str(socket), "MYSQL_HOME": str(socket.parent),
           "MARIADB_HOME": str(socket.parent)}
    client = ["mariadb", "--protocol=socket", f"--socket={socket}",
              f"-u{osuser.admin_user()}",
              *([database] if database else [])]
    if path.name.endswith(".sh"):
        proc = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    else:
        unpack = next((cmd for s, cmd in SUFFIXES.items()
                       if path.name.endswith(s) and cmd), None)
        with open(path, "rb") as f:
            if unpack is None:
                proc = subprocess.run(client, stdin=f, env=env, capture_output=True,
                                      text=True, timeout=timeout)
            else:
                up = subprocess.Popen(unpack, stdin=f, stdout=subprocess.PIPE)
                proc = subprocess.run(client, stdin=up.stdout, env=env, capture_output=True,
                                      text=True, timeout=timeout)
                if up.stdout is not None:
                    up.stdout.close()
                if up.wait() != 0 and proc.returncode == 0:
                    raise RuntimeError(f"{' '.join(unpack)} could not unpack it")
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"exited {proc.returncode}: {last[0][:300]}")


RERUN = ('set the Consul key service/<SERVICE_NAME>/initdb to {"state": "rerun"} to run them '
         'all again')


class InitDb:
    """Run the scripts once per cluster, from the primary, on a thread of its own."""

    def __init__(self, directory: Path, *, node: str, socket: Path, database: str,
                 datadir: Path,
                 read: Callable[[], tuple[int, dict[str, object] | None]],
                 write: Callable[[dict[str, object], int], bool]) -> None:
        self.dir = directory
        self.node = node
        self.socket = socket
        self.database = database
        self.datadir = datadir  # its state file says whether the scripts are due on this data
        self.read = read  # -> (modify index, the key's document or None)
        self.write = write  # (document, index to check; 0: only if absent) -> written
        self.state = ""  # for /status: "", "running", "done", "skipped", or why not
        self._thread: threading.Thread | None = None
        self._settled = False  # nothing more to do in this process's life

    @classmethod
    def for_settings(cls, s: Settings, consul: Consul) -> InitDb:
        """A node's initdb runner: INITDB_DIR, its socket and database, the key in Consul."""
        return cls(s.initdb_dir, node=s.node_name, socket=s.socket, database=s.database,
                   datadir=s.datadir, read=consul.initdb_record, write=consul.write_initdb)

    def primary_open(self) -> None:
        """Called by the loop while this node is the writable primary: cheap after the
        first call (one Consul read, one look at the directory and the state file, once)."""
        if self._settled or (self._thread is not None and self._thread.is_alive()):
            return
        try:
            index, doc = self.read()
            due = dd.read_node_state(self.datadir).get("initdb_due") is True
        except (DCSError, DataDirError) as exc:
            log.debug("initdb: cannot tell yet whether the scripts are due: %s", exc)
            return
        files = scripts(self.dir)
        if doc is not None and doc.get("state") != "rerun":
            self._settled = True
            self._drop_due(due)
            self._note(doc, files)
            return
        rerun = doc is not None
        if not files or not (due or rerun):
            # Nothing to run on a new cluster, or a cluster that is not new: said once, so that
            # scripts found later are never run.
            held = not (due or rerun)
            record: dict[str, object] = {
                "state": "skipped" if held else "done", "by": self.node, "at": _now(),
                "files": [], **({"why": "the cluster held data already when this node, its "
                                        "primary, first looked"} if held else {})}
            try:
                if self.write(record, index):
                    self._settled = True
                    self._drop_due(due)
                    self._note(record, files)
            except DCSError as exc:
                log.debug("initdb: cannot record it yet: %s", exc)
            return
        claim: dict[str, object] = {"state": "running", "by": self.node, "at": _now()}
        try:
            if not self.write(claim, index):
                return  # another node claimed it meanwhile: read again next time
        except DCSError as exc:
            log.debug("initdb: cannot claim it yet: %s", exc)
            return
        self._settled = True
        self._drop_due(due)
        self.state = "running"
        self._thread = threading.Thread(target=self._run, args=(files,), name="initdb",
                                        daemon=True)
        self._thread.start()

    def _drop_due(self, due: bool) -> None:
        """The key speaks for the cluster from now on: were it lost (Consul's data wiped),
        this data's flag must not run the scripts a second time."""
        if not due:
            return
        try:
            state = dd.read_node_state(self.datadir)
            state.pop("initdb_due", None)
            dd.write_node_state(self.datadir, state)
        except (DataDirError, OSError) as exc:
            log.warning("initdb: could not clear initdb_due in %s: %s", self.datadir, exc)

    def _note(self, doc: dict[str, object], files: list[Path]) -> None:
        st = doc.get("state")
        ran = doc.get("files")
        later = [p.name for p in files if not isinstance(ran, list) or p.name not in ran]
        if later and st in ("done", "skipped"):
            log.warning("initdb scripts %s are not run: %s at %s (as in the official image, "
                        "they run once, at a new cluster's initialization; %s)",
                        ", ".join(later),
                        f"the cluster's initialization skipped them ({doc.get('why')})"
                        if st == "skipped" else "the cluster's initialization ran",
                        doc.get("at", "?"),
                        'to run them now, set the Consul key service/<SERVICE_NAME>/initdb '
                        'to {"state": "rerun"}')
        if st in ("done", "skipped"):
            self.state = str(st)
        elif st == "running" and doc.get("by") == self.node:
            self.state = ("interrupted: this node was running the initdb scripts when it "
                          f"stopped; they are not run again. Check what they did, then {RERUN}")
            log.error("%s", self.state)
        elif st in ("running", "failed"):
            self.state = (f"{st} on {doc.get('by')}" + (f" ({doc.get('file')}: "
                                                        f"{doc.get('error')})"
                                                        if st == "failed" else ""))

    def _run(self, files: list[Path]) -> None:
        log.info("running the initdb scripts once for the cluster, on this primary: %s",
                 ", ".join(p.name for p in files))
        for p in files:
            t0 = time.monotonic()
            try:
                run_file(p, self.socket, self.database)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                log.error("initdb script %s failed: %s. The scripts after it did not run, "
                          "and none runs again by itself: fix it by hand, then %s",
                          p.name, exc, RERUN)
                self._record({"state": "failed", "by": self.node, "at": _now(),
                              "file": p.name, "error": str(exc)[:500]})
                self.state = f"failed: {p.name}: {exc}"  # once Consul says so too
                return
            log.info("initdb script %s done in %.1fs", p.name, time.monotonic() - t0)
        self._record({"state": "done", "by": self.node, "at": _now(),
                      "files": [p.name for p in files]})
        self.state = "done"  # once Consul says so too

    def _record(self, doc: dict[str, object]) -> None:
        for _ in range(30):
            try:
                index, _old = self.read()
                if self.write(doc, index):
                    return
            except DCSError as exc:
                log.warning("initdb: recording %s in Consul: %s (retrying)", doc["state"], exc)
            time.sleep(2)
        log.error("initdb: could not record %s in Consul: %s", doc["state"], json.dumps(doc))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
