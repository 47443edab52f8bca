"""/docker-entrypoint-initdb.d, as the official image runs it, once per cluster: `*.sql`,
`*.sql.gz`, `*.sql.xz`, `*.sql.zst` and `*.sh` files in name order, on the first primary
(Galera: the first writer) once it is open for writes, so that what they write goes to the
binary log and every replica gets it. Never on a replica, never twice: a key in Consul
(`service/<SERVICE_NAME>/initdb`) says who runs them, and then that they ran.

    {"state": "running", "by": NODE, "at": TIME}          claimed (check-and-set: one node)
    {"state": "done", "by": NODE, "at": TIME, "files": [...]}
    {"state": "failed", "by": NODE, "at": TIME, "file": F, "error": E}

A run that failed or was cut short (the primary died halfway) is not run again by anyone:
half of a script applied, applied twice, can do harm the operator must judge. The log and
/status say so and what to do (fix by hand, then `consul kv delete` the key to run the
scripts again, or mark it done). SQL runs through the mariadb client over the local socket
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
from .exceptions import DCSError

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
    client = ["mariadb", "--protocol=socket", f"--socket={socket}", "-uroot",
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


class InitDb:
    """Run the scripts once per cluster, from the primary, on a thread of its own."""

    def __init__(self, directory: Path, *, node: str, socket: Path, database: str,
                 read: Callable[[], tuple[int, dict[str, object] | None]],
                 write: Callable[[dict[str, object], int], bool]) -> None:
        self.dir = directory
        self.node = node
        self.socket = socket
        self.database = database
        self.read = read  # -> (modify index, the key's document or None)
        self.write = write  # (document, index to check; 0: only if absent) -> written
        self.state = ""  # for /status: "", "running", "done", or why not
        self._thread: threading.Thread | None = None
        self._settled = False  # nothing more to do in this process's life

    @classmethod
    def for_settings(cls, s: Settings, consul: Consul) -> InitDb:
        """A node's initdb runner: INITDB_DIR, its socket and database, the key in Consul."""
        return cls(s.initdb_dir, node=s.node_name, socket=s.socket, database=s.database,
                   read=consul.initdb_record, write=consul.write_initdb)

    def primary_open(self) -> None:
        """Called by the loop while this node is the writable primary: cheap after the
        first call (one look at the directory, one Consul read, once)."""
        if self._settled or (self._thread is not None and self._thread.is_alive()):
            return
        files = scripts(self.dir)
        if not files:
            self._settled = True
            return
        try:
            index, doc = self.read()
        except DCSError as exc:
            log.debug("initdb: cannot read its key yet: %s", exc)
            return
        if doc is not None:
            self._settled = True
            self._note(doc)
            return
        claim: dict[str, object] = {"state": "running", "by": self.node, "at": _now()}
        try:
            if not self.write(claim, 0):
                return  # another node claimed it meanwhile: read again next time
        except DCSError as exc:
            log.debug("initdb: cannot claim it yet: %s", exc)
            return
        self._settled = True
        self.state = "running"
        self._thread = threading.Thread(target=self._run, args=(files,), name="initdb",
                                        daemon=True)
        self._thread.start()

    def _note(self, doc: dict[str, object]) -> None:
        st = doc.get("state")
        if st == "done":
            self.state = "done"
        elif st == "running" and doc.get("by") == self.node:
            self.state = ("interrupted: this node was running the initdb scripts when it "
                          "stopped; they are not run again. Check what they did, then delete "
                          "the Consul key service/<SERVICE_NAME>/initdb to run them again")
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
                          "and none runs again by itself: fix it by hand, then delete the "
                          "Consul key service/<SERVICE_NAME>/initdb to run them all again",
                          p.name, exc)
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
