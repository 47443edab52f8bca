"""Taking and restoring one snapshot: the process pipelines.

Take:    mariabackup --backup --stream=xbstream | zstd  ->  SnapshotStore.upload (multipart)
Restore: SnapshotStore.download (checked)  ->  zstd -d | mbstream -x  ->  mariabackup --prepare

Nothing is staged on local disk in either direction: the supervisor only holds the parts in
flight. Every process's exit status is checked (a pipeline's last status hides the others) and
its stderr kept for the error message. A failure kills the other processes; the store aborts
the upload, and a restore target is emptied again by the caller that owns it.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ..exceptions import MySQLError, SnapshotCorrupt, SnapshotError
from ..mysql import osuser
from ..mysql.server import LocalServer
from .store import Manifest, Progress, SnapshotStore

log = logging.getLogger(__name__)
# The snapshot yields the CPU to mysqld and the supervisor: it must never fail a health check.
NICE = ("nice", "-n", "10")
STOP_POLL = 0.2  # seconds between should_stop() checks while mariabackup runs
_BINLOG_POS = re.compile(r"filename '([^']*)', position '(\d+)'"
                         r"(?:, GTID of the last change '([^']*)')?")


def new_id(node: str, now: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + f"-{node}"


def parse_backup_info(text: str) -> dict[str, str]:
    """xtrabackup_info (key = value lines) -> the fields we use: gtid, binlog_file, version."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition(" = ")
        if sep:
            info[k.strip()] = v.strip()
    m = _BINLOG_POS.search(info.get("binlog_pos", ""))
    return {"gtid": (m.group(3) or "") if m else "", "binlog_file": m.group(1) if m else "",
            "version": info.get("server_version", "")}


def _stderr_tail(path: Path, n: int = 600) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if "Streaming" not in ln and "Copying" not in ln]
    return "\n".join(lines)[-n:]


def _kill(*procs: subprocess.Popen[bytes] | None) -> None:
    for p in procs:
        if p is not None and p.poll() is None:
            p.kill()
    for p in procs:
        if p is not None:
            p.wait()


def _stop_when(should_stop: Callable[[], bool], mb: subprocess.Popen[bytes],
               stopped: threading.Event) -> None:
    """Kill mariabackup as soon as `should_stop()` (checked every STOP_POLL s), not only at
    the next part boundary of the upload: a small backup is one part, taken in seconds, and
    what the caller stops it for (a Galera reader that became the writer) cannot wait."""
    said = False
    while mb.poll() is None:
        try:
            stop = should_stop()
        except Exception as exc:  # a thread of ours never ends in a traceback
            if not said:
                log.warning("snapshot: cannot tell whether to stop it (%s): it goes on", exc)
                said = True
            stop = False
        if stop:
            stopped.set()
            mb.kill()
            return
        time.sleep(STOP_POLL)


def take(store: SnapshotStore, *, node: str, role: str, primary: str, primary_binlog: str,
         cnf: Path, socket_path: Path, compression_level: int,
         progress: Progress | None = None, should_stop: Callable[[], bool] = lambda: False,
         snapshot_id: str | None = None, galera: bool = False) -> Manifest:
    """Stream a physical backup of the local server into the store; return its manifest (not
    yet written: the caller writes it, then moves the pointer). With `galera`, the backup
    records the node's Galera position (--galera-info: xtrabackup_galera_info, which a
    restore turns into grastate.dat so the node joins by IST) and the manifest the cluster's
    UUID."""
    sid = snapshot_id or new_id(node)
    started = time.time()
    galera_uuid = _cluster_uuid(socket_path) if galera else ""
    with tempfile.TemporaryDirectory(prefix="apm-snapshot-") as tmp:
        work = Path(tmp)
        err = work / "mariabackup.err"
        raw = _Counter()
        mb = zs = None
        uploaded = False
        try:
            with open(err, "wb") as errf:
                mb = subprocess.Popen(
                    [*NICE, "mariabackup", f"--defaults-file={cnf}", "--backup",
                     "--stream=xbstream", f"--target-dir={work / 'target'}",
                     f"--extra-lsndir={work / 'lsn'}",
                     f"--user={osuser.admin_user()}", f"--socket={socket_path}",
                     *(["--galera-info"] if galera else [])],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf,
                    start_new_session=True)
            zs = subprocess.Popen([*NICE, "zstd", "-q", "-c", f"-{compression_level}", "-T0"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, start_new_session=True)
            assert mb.stdout is not None and zs.stdin is not None and zs.stdout is not None
            for pipe in (mb.stdout, zs.stdin, zs.stdout):
                _widen(pipe)
            pump = threading.Thread(target=raw.pump, args=(mb.stdout, zs.stdin),
                                    name="snapshot-pump", daemon=True)
            pump.start()
            stopped = threading.Event()  # set when should_stop() killed mariabackup
            threading.Thread(target=_stop_when, args=(should_stop, mb, stopped),
                             name="snapshot-stop", daemon=True).start()
            stored = store.upload(sid, zs.stdout, progress, should_stop)
            uploaded = True
            pump.join()
            mb_rc, zs_rc = mb.wait(), zs.wait()
            if stopped.is_set():
                raise SnapshotError("snapshot cancelled while mariabackup ran")
            if mb_rc != 0:
                raise SnapshotError(f"mariabackup failed (exit {mb_rc}): {_stderr_tail(err)}")
            if zs_rc != 0 or raw.error:
                raise SnapshotError(f"compression failed (zstd exit {zs_rc}"
                                    f"{', ' + raw.error if raw.error else ''})")
            info = parse_backup_info((work / "lsn" / "xtrabackup_info").read_text())
        except BaseException as exc:
            _kill(mb, zs)
            if uploaded:  # complete, but of a backup that failed: no manifest will name it
                try:
                    store.delete(sid)
                except SnapshotError as gone:
                    log.warning("%s (retention removes it later)", gone)
            if isinstance(exc, OSError):
                raise SnapshotError(f"cannot run the backup pipeline: {exc}. mariabackup and "
                                    "zstd must be installed") from exc
            raise
    log.info("snapshot %s: mariabackup finished, %d MiB streamed and stored in %.1fs", sid,
             raw.n >> 20, time.time() - started)
    if not info["gtid"]:
        log.warning("snapshot %s: mariabackup reported no GTID position (the server has "
                    "never written a transaction?)", sid)
    return Manifest(id=sid, node=node, role=role, primary=primary, gtid=info["gtid"],
                    binlog_file=primary_binlog or info["binlog_file"],
                    server_version=info["version"], started_at=started,
                    finished_at=time.time(), raw_bytes=raw.n, stored_bytes=stored.size,
                    sha256=stored.sha256, s3_checksum=stored.s3_checksum,
                    galera_uuid=galera_uuid)


def _widen(pipe: IO[bytes], size: int = 1 << 20) -> None:
    """A 1 MiB pipe instead of 64 KiB: zstd keeps compressing while the uploader hashes a
    part or waits for one in flight, and mariabackup keeps reading meanwhile. Best effort
    (the kernel caps it at /proc/sys/fs/pipe-max-size for an unprivileged user)."""
    import fcntl

    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, size)
    except OSError:
        pass


def _cluster_uuid(socket_path: Path) -> str:
    server = LocalServer(socket_path, connect_timeout=2, read_timeout=10)
    try:
        rows = server.execute("SHOW GLOBAL STATUS LIKE 'wsrep_cluster_state_uuid'")
    except MySQLError as exc:
        raise SnapshotError(f"cannot read this node's Galera cluster UUID: {exc}") from exc
    finally:
        server.close()
    uuid = str(rows[0][1]) if rows else ""
    if not uuid or uuid.startswith("00000000-"):
        raise SnapshotError("this node is not in a Galera cluster (wsrep_cluster_state_uuid "
                            f"is {uuid!r}): no snapshot")
    return uuid


class _Counter:
    """Copies mariabackup's stream into zstd, counting the uncompressed bytes."""

    def __init__(self) -> None:
        self.n = 0
        self.error = ""

    def pump(self, src: IO[bytes], dst: IO[bytes]) -> None:
        try:
            if hasattr(os, "splice"):
                # pipe to pipe inside the kernel: counted, never copied through Python (a copy
                # cost a core-second per 3 GiB, on a machine where zstd wants every core)
                while moved := os.splice(src.fileno(), dst.fileno(), 1 << 20):
                    self.n += moved
            else:
                while block := src.read1(1 << 20):  # type: ignore[attr-defined]
                    self.n += len(block)
                    dst.write(block)
        except OSError as exc:
            self.error = str(exc)
        finally:
            try:
                dst.close()
            except OSError:
                pass


def extract(store: SnapshotStore, m: Manifest, target: Path,
            progress: Progress | None = None) -> None:
    """Download, check, decompress and unpack snapshot `m` into the empty directory `target`,
    then prepare it (apply the redo log) so a server can start on it. On failure the target
    holds partial files: the caller empties it."""
    unpack(lambda sink: store.download(m, sink, progress), target, f"snapshot {m.id}")
    prepare(target)
    have = read_backup_gtid(target)
    if have != m.gtid:
        raise SnapshotCorrupt(f"snapshot {m.id} holds GTID position {have!r} but its manifest "
                            f"says {m.gtid!r}: the object and its manifest do not belong "
                            "together")


def unpack(source: Callable[[IO[bytes]], None], target: Path, what: str) -> None:
    """`source` writes a zstd-compressed xbstream into the sink it is given (a download, a
    copy of a live node); it is decompressed and unpacked into the empty directory `target`.
    Every process's exit status is checked."""
    target.mkdir(parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise SnapshotError(f"{target} is not empty: a backup is only restored into an empty "
                            "directory")
    with tempfile.TemporaryDirectory(prefix="apm-restore-") as tmp:
        err = Path(tmp) / "extract.err"
        zs = mx = None
        try:
            with open(err, "wb") as errf:
                mx = subprocess.Popen(["mbstream", "-x", "-C", str(target)],
                                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=errf, start_new_session=True)
                assert mx.stdin is not None
                zs = subprocess.Popen(["zstd", "-q", "-d", "-c"], stdin=subprocess.PIPE,
                                      stdout=mx.stdin, stderr=errf, start_new_session=True)
            mx.stdin.close()  # zstd holds the pipe now
            assert zs.stdin is not None
            try:
                source(zs.stdin)
            finally:
                try:
                    zs.stdin.close()
                except OSError:
                    pass
            zs_rc, mx_rc = zs.wait(), mx.wait()
            if zs_rc != 0 or mx_rc != 0:
                raise SnapshotError(f"{what} could not be unpacked (zstd exit {zs_rc}, "
                                    f"mbstream exit {mx_rc}): {_stderr_tail(err)}")
        except BaseException:
            _kill(zs, mx)
            raise


def prepare(target: Path) -> None:
    proc = subprocess.run(["mariabackup", "--prepare", f"--target-dir={target}"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SnapshotError(f"mariabackup --prepare failed on {target} (exit "
                            f"{proc.returncode}): {proc.stderr.strip()[-600:]}")


def read_backup_gtid(target: Path) -> str:
    """The GTID position recorded inside an unpacked backup (10.11 names the file
    xtrabackup_binlog_info; later versions mariadb_backup_binlog_info)."""
    for name in ("mariadb_backup_binlog_info", "xtrabackup_binlog_info"):
        p = target / name
        if p.exists():
            fields = p.read_text().split()
            return fields[2] if len(fields) >= 3 else ""
    return ""


def read_galera_position(target: Path) -> tuple[str, int] | None:
    """The Galera position (uuid, seqno) an unpacked backup taken with --galera-info holds
    ("uuid:seqno [gtid]" in xtrabackup_galera_info; mariadb_backup_galera_info in later
    versions), or None."""
    for name in ("mariadb_backup_galera_info", "xtrabackup_galera_info"):
        p = target / name
        if p.exists():
            first = (p.read_text().split() or [""])[0]
            uuid, sep, seqno = first.rpartition(":")
            try:
                return (uuid, int(seqno)) if sep and uuid else None
            except ValueError:
                return None
    return None


def chown_tree(path: Path) -> None:
    """Give a restored or copied tree to mysqld's user (a no-op when we are that user)."""
    osuser.give_tree(path)


def throwaway_server(datadir: Path, check: Callable[[Path], None], timeout: float = 120,
                     log_bin: bool = False) -> None:
    """Start a socket-only mariadbd on `datadir` (no replication, small buffers; a binary
    log only with `log_bin`), call `check(socket)` once it answers, and stop it. Used by
    `verify`, by restores, and to snapshot a point-in-time restore for a new cluster."""
    with tempfile.TemporaryDirectory(prefix="apm-verify-") as tmp:
        run = Path(tmp)
        osuser.give(run)
        sock = run / "s.sock"
        out = run / "mysqld.log"
        with open(out, "wb") as f:
            proc = subprocess.Popen(
                ["mariadbd", "--no-defaults", "--user=mysql", f"--datadir={datadir}",
                 f"--socket={sock}", f"--pid-file={run / 'pid'}", "--skip-networking",
                 "--skip-slave-start",
                 "--log-bin=mysql-bin" if log_bin else "--skip-log-bin",
                 "--innodb-buffer-pool-size=64M",
                 "--server-id=1"],
                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            probe = LocalServer(sock, connect_timeout=1.0, read_timeout=10)
            while True:
                try:
                    probe.execute("SELECT 1")
                    break
                except MySQLError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SnapshotError(
                            "a server could not start on the restored data: "
                            + out.read_text(errors="replace").strip()[-600:]) from None
                    time.sleep(0.2)
            probe.close()
            check(sock)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
