"""SQL operations on the local server, over its unix socket as root (unix_socket auth: the
supervisor needs no password of its own). Every PyMySQL error becomes a MySQLError here."""

from __future__ import annotations

import logging
import secrets
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pymysql

from .. import gtid
from ..exceptions import MySQLError
from ..model import Replication
from . import osuser

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerVars:
    read_only: bool
    position: str  # every transaction this server holds (see `held`)
    version: str
    semi_sync_replica: bool = False  # the IO thread acknowledges (Rpl_semi_sync_slave_status)


def held(binlog_pos: str, slave_pos: str) -> str:
    """What a server holds, per domain the further of its binary log and its applied
    replication position. Not gtid_current_pos: that takes a domain's GTID from the binary log
    only while its server_id is the server's own, so a node whose server_id changed (or a
    replica whose binlog lags its slave position) would under-report what it holds."""
    return gtid.render(gtid.merge(gtid.parse(binlog_pos), gtid.parse(slave_pos)))


@dataclass(frozen=True)
class PrimaryState:
    """The primary's side of semi-sync, from one query."""

    semi_sync_on: bool  # rpl_semi_sync_master_enabled
    wait_sessions: int  # commits waiting for an acknowledgement now
    yes_tx: int  # commits acknowledged by a replica so far
    binlog_pos: str  # gtid_binlog_pos


class FenceResult(StrEnum):
    FENCED = "fenced"  # read_only is on and client connections are dropped
    WAITING = "waiting"  # commits wait for acknowledgements that do not come: read_only
    #                      could not be set behind them (they would become errant if killed)


# mariadbd's words once it accepts connections (the HA loop wakes on them)
READY = "ready for connections"
FENCE_TIMEOUT = 0.3  # seconds SET read_only may take before the fence crashes mysqld instead
FENCE_ACK_WAIT = 0.05  # seconds without an acknowledgement while commits wait: they never get one
_STATUS = ("(SELECT variable_value FROM information_schema.global_status WHERE "
           "variable_name = '{}')")


def local_connection(socket: Path, connect_timeout: float, timeout: float | None,
                     program: str) -> pymysql.connections.Connection[Any]:
    """A connection to this node's mysqld over its unix socket, as the admin user (the OS
    user, by unix_socket). No TLS: PyMySQL otherwise builds a TLS context for every
    connection, in case the server offers it (1.3 MiB with the system's CA store, and 17 ms
    of CPU, each time: a fence's connection included), for a socket no one else can read."""
    return pymysql.connect(unix_socket=str(socket), user=osuser.admin_user(), autocommit=True,
                           connect_timeout=connect_timeout, read_timeout=timeout,
                           write_timeout=timeout, program_name=program, ssl_disabled=True)


class LocalServer:
    def __init__(self, socket: Path, *, connect_timeout: float = 1.0,
                 read_timeout: float | None = 3.0) -> None:
        self.socket = socket
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._conn: pymysql.connections.Connection[Any] | None = None
        self._lock = threading.Lock()

    def _connection(self) -> pymysql.connections.Connection[Any]:
        if self._conn is None or not self._conn.open:
            self._conn = local_connection(self.socket, self.connect_timeout,
                                          self.read_timeout, "autopilot-mysql")
        return self._conn

    def execute(self, sql: str, args: tuple[object, ...] | None = None
                ) -> list[tuple[Any, ...]]:
        """One statement on the shared connection. Any failure becomes a MySQLError and the
        connection is dropped (the next call reconnects)."""
        with self._lock:
            try:
                conn = self._connection()
                with conn.cursor() as cur:
                    cur.execute(sql, args)
                    return list(cur.fetchall())
            except (pymysql.MySQLError, OSError) as exc:
                self.close_locked()
                raise MySQLError(f"{sql.split()[0]} on {self.socket}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self.close_locked()

    def close_locked(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a broken connection may fail in any way
                pass
            self._conn = None

    # --- observations ---------------------------------------------------------------------------

    def vars(self) -> ServerVars:
        row = self.execute("SELECT @@global.read_only, @@global.gtid_binlog_pos, "
                           "@@global.gtid_slave_pos, @@version, "
                           + _STATUS.format("RPL_SEMI_SYNC_SLAVE_STATUS"))[0]
        return ServerVars(read_only=bool(row[0]), position=held(str(row[1] or ""),
                                                                 str(row[2] or "")),
                          version=str(row[3]), semi_sync_replica=row[4] == "ON")

    def replica_status(self) -> Replication | None:
        """None when this server has no replication configured."""
        with self._lock:
            try:
                conn = self._connection()
                with conn.cursor(pymysql.cursors.DictCursor) as cur:
                    cur.execute("SHOW SLAVE STATUS")
                    row = cur.fetchone()
            except (pymysql.MySQLError, OSError) as exc:
                self.close_locked()
                raise MySQLError(f"SHOW SLAVE STATUS on {self.socket}: {exc}") from exc
        if not row or not row.get("Master_Host"):
            return None
        behind = row.get("Seconds_Behind_Master")
        return Replication(
            master_host=str(row["Master_Host"]), io_running=row["Slave_IO_Running"] == "Yes",
            sql_running=row["Slave_SQL_Running"] == "Yes",
            # "Preparing": started, not connecting yet (right after START SLAVE), not stopped
            io_connecting=row["Slave_IO_Running"] in ("Connecting", "Preparing"),
            seconds_behind=None if behind is None else int(behind),
            last_io_errno=int(row.get("Last_IO_Errno") or 0),
            last_io_error=str(row.get("Last_IO_Error") or ""),
            last_sql_errno=int(row.get("Last_SQL_Errno") or 0),
            last_sql_error=str(row.get("Last_SQL_Error") or ""),
            gtid_io_pos=str(row.get("Gtid_IO_Pos") or ""),
            master_log_file=str(row.get("Master_Log_File") or ""))

    def primary_state(self) -> PrimaryState:
        row = self.execute(
            "SELECT @@global.rpl_semi_sync_master_enabled, "
            f"{_STATUS.format('RPL_SEMI_SYNC_MASTER_WAIT_SESSIONS')}, "
            f"{_STATUS.format('RPL_SEMI_SYNC_MASTER_YES_TX')}, @@global.gtid_binlog_pos")[0]
        return PrimaryState(semi_sync_on=bool(row[0]), wait_sessions=int(row[1] or 0),
                            yes_tx=int(row[2] or 0), binlog_pos=str(row[3] or ""))

    def set_semi_sync_primary(self, on: bool) -> None:
        """Off releases every commit waiting for an acknowledgement (acknowledged alone)."""
        self.execute(f"SET GLOBAL rpl_semi_sync_master_enabled = {'ON' if on else 'OFF'}")

    def attached_replicas(self) -> set[str]:
        """The report_host (node name) of every replica whose IO thread is attached to us."""
        return {str(r[1]) for r in self.execute("SHOW SLAVE HOSTS")}

    def execute_unlogged(self, stmts: list[tuple[str, tuple[object, ...]]]) -> None:
        """Statements kept out of the binary log (sql_log_bin=0 on our connection, restored):
        local changes that must never replicate."""
        with self._lock:
            try:
                conn = self._connection()
                with conn.cursor() as cur:
                    cur.execute("SET SESSION sql_log_bin = 0")
                    try:
                        for sql, args in stmts:
                            cur.execute(sql, args)
                    finally:
                        cur.execute("SET SESSION sql_log_bin = 1")
            except (pymysql.MySQLError, OSError) as exc:
                self.close_locked()
                raise MySQLError(f"{stmts[0][0].split()[0]} on {self.socket}: {exc}") from exc

    def shut_out(self, user: str, address: str) -> int:
        """Keep the replica at `address` out (election.I2): an account `user`@`address`,
        locked, is more specific than `user`@'%', so that replica's next connection is refused;
        its current one is dropped. Local to this server (not in the binary log). Returns how
        many of its connections were dropped."""
        self.execute_unlogged([
            ("CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s ACCOUNT LOCK",
             (user, address, secrets.token_hex(16)))])
        dropped = 0
        for (cid,) in self.execute(
                "SELECT id FROM information_schema.processlist WHERE command LIKE 'Binlog Dump%%' "
                "AND SUBSTRING_INDEX(host, ':', 1) = %s", (address,)):
            try:
                self.execute(f"KILL CONNECTION {int(cid)}")
                dropped += 1
            except MySQLError:
                pass
        return dropped

    def let_in(self, user: str, address: str) -> None:
        self.execute_unlogged([("DROP USER IF EXISTS %s@%s", (user, address))])

    def shut_out_addresses(self, user: str) -> list[str]:
        """Addresses we keep out (locked `user`@address accounts), as shut_out made them."""
        rows = self.execute(
            "SELECT host FROM mysql.global_priv WHERE user = %s AND host <> '%%' AND "
            "JSON_VALUE(priv, '$.account_locked') IN ('1', 'true')", (user,))
        return [str(r[0]) for r in rows]

    def binlog_file(self) -> str:
        """The binary log this server writes now ('' when binary logging is off)."""
        rows = self.execute("SHOW MASTER STATUS")
        return str(rows[0][0]) if rows else ""

    def binlog_gtids_after(self, base: Mapping[int, gtid.Gtid], limit: int = 50,
                           page: int = 2000, max_events: int = 200_000) -> list[str]:
        """GTIDs in this server's binary log beyond `base` (domain -> Gtid), newest files
        first, at most `limit`: used to name errant transactions exactly. The scan reads pages
        of events (each page starts where the last one ended) and stops after `max_events`
        in all, so a huge binary log costs a bounded read; the caller falls back to ranges."""
        found: list[gtid.Gtid] = []
        scanned = 0
        files = [str(r[0]) for r in self.execute("SHOW BINARY LOGS")]
        for name in reversed(files):
            older, pos = False, 4
            while scanned < max_events:
                rows = self.execute("SHOW BINLOG EVENTS IN %s FROM %s LIMIT %s",
                                    (name, pos, page))
                scanned += len(rows)
                for row in rows:
                    if row[2] != "Gtid":
                        continue
                    g = gtid.of_event_info(str(row[5]))
                    if g is None:
                        continue
                    b = base.get(g.domain)
                    if b is None or g.seqno > b.seqno:
                        found.append(g)
                    else:
                        older = True
                if len(rows) < page:
                    break
                pos = int(rows[-1][4])  # End_log_pos: where the next event starts
            if older or len(found) >= limit or scanned >= max_events:
                break
        return [str(g) for g in sorted(set(found), key=lambda g: (g.domain, g.seqno))[:limit]]

    # --- actions --------------------------------------------------------------------------------

    def replicate_from(self, host: str, user: str, password: str, *, semi_sync: bool) -> None:
        """Point replication at `host` by GTID and start it, acknowledging commits (semi-sync)
        only when `semi_sync` (we are in the primary's acknowledgement set: election.I2)."""
        st = self.replica_status()
        if st is not None and st.sql_running and st.gtid_io_pos:
            # The restart below discards the relay log (GTID replication re-fetches from the
            # primary, which may be dying): apply what it holds first (election.I9).
            self.stop_io_and_drain(2.0)
        self.execute("STOP SLAVE")
        # A former primary keeps master-side semi-sync on otherwise, and with log_slave_updates
        # its SQL thread would wait for an acknowledgement (from replicas it does not have)
        # after every applied transaction.
        self.execute("SET GLOBAL rpl_semi_sync_master_enabled = OFF")
        self.execute(f"SET GLOBAL rpl_semi_sync_slave_enabled = {'ON' if semi_sync else 'OFF'}")
        # Start after everything we hold (`held`), whatever server_id wrote it.
        self.execute("SET GLOBAL gtid_slave_pos = %s", (self.vars().position,))
        self.execute("CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = 3306, MASTER_USER = %s, "
                     "MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos, "
                     "MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = 1",
                     (host, user, password))
        self.execute("START SLAVE")

    def apply_relay_log(self, datadir: Path, timeout: float = 300.0) -> tuple[str, str]:
        """Apply, through a client session, the transactions this stopped replica received
        beyond what it holds: what a restarted mysqld keeps in its relay log and GTID
        replication would discard at the next START SLAVE (a semi-sync replica acknowledged
        them on receipt: they may be acknowledged commits; MariaDB's GTID replication
        re-fetches them from its primary instead, which in an election may be gone). Each keeps
        its GTID in our binary log; a transaction cut short at the end rolls back. Returns our
        position (before, after). Only while both replication threads are stopped."""
        st = self.replica_status()
        if st is None or st.io_running or st.sql_running or st.io_connecting:
            raise MySQLError("replication is running: its relay log is being applied already")
        try:
            names = (datadir / "relay-bin.index").read_text().split()
        except FileNotFoundError:
            names = []
        except OSError as exc:
            raise MySQLError(f"cannot read {datadir / 'relay-bin.index'}: {exc}") from exc
        files = [str(datadir / n) for n in names if (datadir / n).is_file()]
        before = self.vars().position
        if not files:
            return before, before
        # Our commits must not wait for acknowledgements (a former primary's setting).
        self.execute("SET GLOBAL rpl_semi_sync_master_enabled = OFF")
        # Without strict mode: a relay log holding nothing beyond our position is no error.
        start = ["--skip-gtid-strict-mode"] + ([f"--start-position={before}"] if before else [])
        dump: subprocess.Popen[bytes] | None = None
        try:
            dump = subprocess.Popen(["mariadb-binlog", *start, *files], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            assert dump.stdout is not None
            apply = subprocess.run(["mariadb", f"--socket={self.socket}",
                                    f"--user={osuser.admin_user()}",
                                    "--batch", "--silent"], stdin=dump.stdout,
                                   capture_output=True, timeout=timeout)
            dump.stdout.close()
            _, dump_err = dump.communicate(timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            raise MySQLError(f"applying the relay log ({' '.join(names)}) failed: {exc}") from exc
        finally:
            if dump is not None and dump.poll() is None:
                dump.kill()
                dump.wait()
        after = self.vars().position
        if dump.returncode != 0 or apply.returncode != 0:
            why = (dump_err or apply.stderr).decode(errors="replace").strip()[-300:]
            raise MySQLError(f"applying the relay log ({' '.join(names)}) failed: "
                             f"mariadb-binlog exit {dump.returncode}, mariadb exit "
                             f"{apply.returncode}: {why} (position {before} -> {after})")
        return before, after

    def stop_io_and_drain(self, timeout: float, received: str | None = None) -> bool:
        """Stop fetching from the (lost) primary and apply what was received. True when the
        relay log is applied within `timeout`. With `received` (a switchover: the old primary
        fenced itself at that position and is still up), first let the IO thread fetch up to
        it, so the new primary has every transaction."""
        st = self.replica_status()
        if st is None:
            return True
        if received:
            deadline = time.monotonic() + timeout
            want = gtid.parse(received)
            while time.monotonic() < deadline:
                st = self.replica_status()
                if st is None or gtid.covers(gtid.parse(st.gtid_io_pos or ""), want) or \
                        gtid.covers(gtid.parse(self.vars().position), want):
                    break
                time.sleep(0.01)
        self.execute("STOP SLAVE IO_THREAD")
        st = self.replica_status()
        if st is None or not st.gtid_io_pos:
            return True
        if not st.sql_running:
            return False
        limit = self.read_timeout if self.read_timeout is not None else timeout + 0.5
        wait = min(timeout, limit - 0.5)
        row = self.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (st.gtid_io_pos, wait))
        return bool(row and row[0][0] == 0)

    def change_server_id(self, server_id: int) -> str:
        """A new server_id (replication stopped: it restarts from what we hold, `held`, at
        the next replicate_from). Returns that position."""
        self.execute("STOP SLAVE")
        self.execute("SET GLOBAL server_id = %s", (server_id,))
        return self.vars().position

    def prepare_primary(self, semi_sync: bool) -> None:
        """Before opening: replication threads stopped, and semi-synchronous acknowledgements
        awaited (after sync: an acknowledged commit is in a replica's relay log) when
        `semi_sync`. The replication settings and relay logs go after opening
        (forget_replication: deleting files is the slowest part, and nothing needs it)."""
        self.execute("STOP SLAVE")
        self.execute("SET GLOBAL rpl_semi_sync_slave_enabled = OFF")
        self.set_semi_sync_primary(semi_sync)

    def forget_replication(self) -> None:
        self.execute("RESET SLAVE ALL")

    def set_read_only(self, on: bool) -> None:
        self.execute(f"SET GLOBAL read_only = {'ON' if on else 'OFF'}")

    def fence(self, timeout: float = FENCE_TIMEOUT, drop: bool = True
              ) -> tuple[FenceResult, int]:
        """Stop accepting writes: read_only ON, then drop client connections. SET read_only
        waits for commits in progress; commits that wait for a semi-sync acknowledgement that
        never comes (our replicas follow another primary, or cannot reach us) would hold it for
        ever, and killing them would commit them locally (errant transactions). So when
        commits wait and no acknowledgement arrives, or SET read_only takes longer than
        `timeout`, it reports WAITING: the caller crashes mysqld instead, and MariaDB's
        semi-sync recovery (--init-rpl-role=SLAVE) truncates those commits, never
        acknowledged, at the next start. Returns the result and how many connections were
        dropped. `drop=False` leaves the clients and semi-sync to `drop_clients` (a switchover
        hands over first: read_only alone already stops every write)."""
        st = self.primary_state()
        if st.wait_sessions:
            # Under load a commit nearly always waits for its acknowledgement, which comes
            # within a millisecond or two: look again every few milliseconds, and report
            # WAITING only when none came for FENCE_ACK_WAIT.
            deadline = time.monotonic() + FENCE_ACK_WAIT
            while True:
                time.sleep(0.003)
                again = self.primary_state()
                if not again.wait_sessions or again.yes_tx != st.yes_tx:
                    break
                if time.monotonic() >= deadline:
                    log.warning("fence: %d commit(s) wait for a semi-sync acknowledgement and "
                                "none came for %.0f ms: read_only would wait behind them",
                                again.wait_sessions, FENCE_ACK_WAIT * 1000)
                    return FenceResult.WAITING, 0  # acknowledgements stopped
        try:
            conn = local_connection(self.socket, self.connect_timeout, timeout,
                                    "autopilot-mysql-fence")
        except (pymysql.MySQLError, OSError) as exc:
            raise MySQLError(f"fence on {self.socket}: {exc}") from exc
        try:
            with conn.cursor() as cur:
                cur.execute("SET GLOBAL read_only = ON")
        except (pymysql.MySQLError, OSError) as exc:
            if isinstance(exc, pymysql.err.OperationalError) and exc.args and \
                    exc.args[0] in (2013, 2006):  # our read timed out: it waits behind commits
                log.warning("fence: SET GLOBAL read_only = ON did not finish within %.1fs (it "
                            "waits for commits in progress and table locks; a backup's lock, "
                            "or a server starved of CPU or I/O)", timeout)
                return FenceResult.WAITING, 0
            raise MySQLError(f"SET read_only on {self.socket}: {exc}") from exc
        finally:
            try:
                conn.close()
            except Exception:
                pass
        return FenceResult.FENCED, self.drop_clients() if drop else 0

    def drop_clients(self) -> int:
        """After read_only: the clients go (they reconnect, through a router, to the new
        primary), and master-side semi-sync with them: nothing of the application can be
        committing now (read_only waited for it, new writes are refused), so it would only
        hold up root over the local socket (READ ONLY ADMIN), an operator writing on purpose.
        Returns how many connections were dropped."""
        killed = self.kill_client_connections()
        self.set_semi_sync_primary(False)
        return killed

    def read_only_now(self) -> bool:
        return bool(self.execute("SELECT @@global.read_only")[0][0])

    def kill_client_connections(self) -> int:
        """Drop every client connection but system threads, replication and root over the
        local socket: a fenced node must not keep sessions that started writing while it was
        primary. root@localhost is spared: it holds READ ONLY ADMIN, so killing it fences
        nothing, and it is the supervisor's own connections (the loop's, the watchdog's) and
        mariabackup's; killing those made /health fail and cost the session."""
        rows = self.execute(
            "SELECT id FROM information_schema.processlist WHERE id <> CONNECTION_ID() "
            "AND command NOT IN ('Daemon', 'Binlog Dump', 'Binlog Dump GTID', 'Slave_IO', "
            "'Slave_SQL', 'Slave_worker') AND user NOT IN ('system user', 'event_scheduler') "
            "AND NOT (user = %s AND host = 'localhost')", (osuser.admin_user(),))
        killed = 0
        for (cid,) in rows:
            try:
                self.execute(f"KILL CONNECTION {int(cid)}")
                killed += 1
            except MySQLError:
                pass  # it ended by itself meanwhile
        return killed


def create_users_sql(*, root_password: str, database: str, user: str, password: str,
                     repl_user: str, repl_password: str, root_host: str = "%"
                     ) -> list[tuple[str, tuple[str, ...]]]:
    """The first-boot statements, as (sql, args) pairs (values are bound, never formatted in).

    root@'%' (root@ROOT_HOST: MARIADB_ROOT_HOST; none when it is localhost) gets every
    privilege except READ ONLY ADMIN, so read_only fences it too; only root@localhost over the
    unix socket (the supervisor, or an operator inside the container) may turn read_only off.
    Nothing here is written to the binary log.
    """
    stmts: list[tuple[str, tuple[str, ...]]] = [
        ("SET SESSION sql_log_bin = 0", ()),
        ("ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password "
         "USING PASSWORD(%s)", (root_password,)),
    ]
    if root_host != "localhost":
        stmts += [
            ("CREATE USER IF NOT EXISTS root@%s IDENTIFIED BY %s", (root_host, root_password)),
            ("GRANT ALL PRIVILEGES ON *.* TO root@%s WITH GRANT OPTION", (root_host,)),
            ("REVOKE READ ONLY ADMIN ON *.* FROM root@%s", (root_host,)),
        ]
    stmts += [
        ("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (repl_user, repl_password)),
        ("GRANT REPLICATION SLAVE, SLAVE MONITOR, BINLOG MONITOR ON *.* TO %s@'%%'",
         (repl_user,)),
    ]
    if database:
        stmts.append((f"CREATE DATABASE IF NOT EXISTS `{database}`", ()))
    if user:
        stmts.append(("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (user, password)))
        if database:
            stmts.append((f"GRANT ALL PRIVILEGES ON `{database}`.* TO %s@'%%'", (user,)))
    stmts.append(("DROP USER IF EXISTS ''@localhost", ()))
    return stmts


def run_statements(server: LocalServer, stmts: list[tuple[str, tuple[str, ...]]]) -> None:
    # One connection for all: sql_log_bin=0 is a session setting.
    with server._lock:
        try:
            conn = server._connection()
            with conn.cursor() as cur:
                for sql, args in stmts:
                    cur.execute(sql, args)  # always a tuple: "%%" must become "%"
        except (pymysql.MySQLError, OSError) as exc:
            server.close_locked()
            raise MySQLError(f"first-boot statement failed on {server.socket}: {exc}") from exc
        server.close_locked()
