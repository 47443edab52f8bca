"""A copy of a live node, for re-provisioning when no snapshot can be used (none configured,
or none new enough): the donor streams `mariabackup --backup --stream=xbstream | zstd` over
its HTTP endpoint (GET /clone), the receiver unpacks and prepares it like a snapshot
(provision.py).

- Only nodes of the cluster may ask: the request carries an HMAC of its wall-clock stamp and
  the asker's name with the replication password (which already lets a replica read every
  binary log, the same data), and an old stamp is refused (replays).
- The body is HTTP/1.1 chunked; the donor ends it with the last (empty) chunk only when
  mariabackup and zstd both exited 0. A backup that failed, or a connection cut, ends without
  it, and the receiver's read fails: a truncated copy is never taken for a whole one (zstd's
  frame check and `mariabackup --prepare` check again).
- One clone at a time per donor; it runs niced, beside the HA loop, never in it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ..exceptions import SnapshotError
from ..mysql import osuser
from .store import Progress

log = logging.getLogger(__name__)
HEADER = "X-Autopilot-Clone"
MAX_SKEW = 60.0
NICE = ("nice", "-n", "10")
_busy = threading.Lock()


def _mac(secret: str, stamp: str, asker: str) -> str:
    return hmac.new(secret.encode(), f"clone:{stamp}:{asker}".encode(),
                    hashlib.sha256).hexdigest()


def signature(secret: str, asker: str, now: float | None = None) -> str:
    stamp = f"{time.time() if now is None else now:.0f}"
    return f"{stamp}:{asker}:{_mac(secret, stamp, asker)}"


def check(secret: str, header: str, now: float | None = None) -> str | None:
    """The asker's name, or None when the signature is wrong or stale."""
    try:
        stamp, asker, mac = header.split(":", 2)
        if abs((time.time() if now is None else now) - float(stamp)) > MAX_SKEW:
            return None
    except ValueError:
        return None
    return asker if hmac.compare_digest(_mac(secret, stamp, asker), mac) else None


def serve(cnf: Path, socket_path: Path, write: Callable[[bytes], None],
          level: int = 3) -> tuple[bool, str]:
    """Donor side: stream a compressed physical backup of the local server through `write`.
    (True, "") when it completed; (False, why) otherwise (the caller then ends the response
    without its final chunk)."""
    if not _busy.acquire(blocking=False):
        return False, "another clone is being served"
    mb = zs = None
    try:
        with tempfile.TemporaryDirectory(prefix="apm-clone-") as tmp:
            err = Path(tmp) / "mariabackup.err"
            with open(err, "wb") as errf:
                mb = subprocess.Popen(
                    [*NICE, "mariabackup", f"--defaults-file={cnf}", "--backup",
                     "--stream=xbstream", f"--target-dir={Path(tmp) / 'target'}",
                     f"--user={osuser.admin_user()}", f"--socket={socket_path}"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf,
                    start_new_session=True)
                assert mb.stdout is not None
                zs = subprocess.Popen([*NICE, "zstd", "-q", "-c", f"-{level}", "-T0"],
                                      stdin=mb.stdout, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
                mb.stdout.close()  # zstd holds it
                assert zs.stdout is not None
                while block := zs.stdout.read(1 << 20):
                    write(block)
                zs_rc, mb_rc = zs.wait(), mb.wait()
            if mb_rc != 0 or zs_rc != 0:
                tail = err.read_text(errors="replace").strip().splitlines()[-3:]
                return False, f"mariabackup exit {mb_rc}, zstd exit {zs_rc}: {' '.join(tail)}"
            return True, ""
    except OSError as exc:  # the asker went away, or a tool is missing
        return False, str(exc)
    finally:
        for p in (zs, mb):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        _busy.release()


def fetch(url: str, secret: str, asker: str, sink: IO[bytes],
          progress: Progress | None = None, timeout: float = 30) -> None:
    """Receiver side: write a donor's compressed backup stream into `sink`. Raises
    SnapshotError when it was refused or did not end whole."""
    import requests  # only while a copy is received: 8 MiB the supervisor does not keep

    got = 0
    try:
        with requests.get(f"{url}/clone", headers={HEADER: signature(secret, asker)},
                          stream=True, timeout=timeout) as r:
            if r.status_code != 200:
                raise SnapshotError(f"the donor {url} refused the copy: {r.status_code} "
                                    f"{r.text.strip()[:200]}")
            for block in r.iter_content(1 << 20):
                sink.write(block)
                got += len(block)
                if progress is not None:
                    progress(got)
    except requests.RequestException as exc:
        raise SnapshotError(f"the copy from {url} broke off after {got >> 20} MiB: {exc}") \
            from exc
