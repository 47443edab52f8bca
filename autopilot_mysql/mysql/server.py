"""SQL operations on the local server, over its unix socket as root (unix_socket auth: the
supervisor needs no password of its own). Every PyMySQL error becomes a MySQLError here."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql

from .. import gtid
from ..exceptions import MySQLError
from ..model import Replication

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerVars:
    read_only: bool
    gtid_current_pos: str
    version: str


class LocalServer:
    def __init__(self, socket: Path, *, connect_timeout: float = 1.0,
                 read_timeout: float = 3.0) -> None:
        self.socket = socket
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._conn: pymysql.connections.Connection[Any] | None = None
        self._lock = threading.Lock()

    def _connection(self) -> pymysql.connections.Connection[Any]:
        if self._conn is None or not self._conn.open:
            self._conn = pymysql.connect(
                unix_socket=str(self.socket), user="root", autocommit=True,
                connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
                write_timeout=self.read_timeout, program_name="autopilot-mysql")
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
        row = self.execute("SELECT @@global.read_only, @@global.gtid_current_pos, @@version")[0]
        return ServerVars(read_only=bool(row[0]), gtid_current_pos=str(row[1] or ""),
                          version=str(row[2]))

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
            io_connecting=row["Slave_IO_Running"] == "Connecting",
            seconds_behind=None if behind is None else int(behind),
            last_io_errno=int(row.get("Last_IO_Errno") or 0),
            last_io_error=str(row.get("Last_IO_Error") or ""),
            last_sql_errno=int(row.get("Last_SQL_Errno") or 0),
            last_sql_error=str(row.get("Last_SQL_Error") or ""),
            gtid_io_pos=str(row.get("Gtid_IO_Pos") or ""),
            master_log_file=str(row.get("Master_Log_File") or ""))

    def semi_sync_master(self) -> tuple[bool, bool, int, str]:
        """(enabled, status ON, commits acknowledged by a replica so far, gtid_binlog_pos)."""
        status = ("(SELECT variable_value FROM information_schema.global_status WHERE "
                  "variable_name = '{}')")
        enabled, on, yes_tx, pos = self.execute(
            "SELECT @@global.rpl_semi_sync_master_enabled, "
            f"{status.format('RPL_SEMI_SYNC_MASTER_STATUS')}, "
            f"{status.format('RPL_SEMI_SYNC_MASTER_YES_TX')}, @@global.gtid_binlog_pos")[0]
        return bool(enabled), on == "ON", int(yes_tx or 0), str(pos or "")

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

    def replicate_from(self, host: str, user: str, password: str) -> None:
        """Point replication at `host` by GTID and start it. current_pos: a former primary's
        history is in its binary log, not in gtid_slave_pos; a replica's is in both."""
        self.execute("STOP SLAVE")
        # A former primary keeps master-side semi-sync on otherwise, and with log_slave_updates
        # its SQL thread would wait for an acknowledgement (from replicas it does not have)
        # after every applied transaction.
        self.execute("SET GLOBAL rpl_semi_sync_master_enabled = OFF")
        self.execute("SET GLOBAL rpl_semi_sync_slave_enabled = ON")
        self.execute("CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = 3306, MASTER_USER = %s, "
                     "MASTER_PASSWORD = %s, MASTER_USE_GTID = current_pos, "
                     "MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = 1",
                     (host, user, password))
        self.execute("START SLAVE")

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
                        gtid.covers(gtid.parse(self.vars().gtid_current_pos), want):
                    break
                time.sleep(0.01)
        self.execute("STOP SLAVE IO_THREAD")
        st = self.replica_status()
        if st is None or not st.gtid_io_pos:
            return True
        if not st.sql_running:
            return False
        wait = min(timeout, self.read_timeout - 0.5)
        row = self.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (st.gtid_io_pos, wait))
        return bool(row and row[0][0] == 0)

    def stop_replication(self) -> None:
        self.execute("STOP SLAVE")
        self.execute("RESET SLAVE ALL")

    def promote(self) -> None:
        """Become the primary: replication off, semi-synchronous acknowledgements awaited
        (after sync: an acknowledged commit is in a replica's relay log), writes on."""
        self.stop_replication()
        self.execute("SET GLOBAL rpl_semi_sync_slave_enabled = OFF")
        self.execute("SET GLOBAL rpl_semi_sync_master_enabled = ON")
        self.execute("SET GLOBAL read_only = OFF")

    def set_read_only(self, on: bool) -> None:
        self.execute(f"SET GLOBAL read_only = {'ON' if on else 'OFF'}")

    def fence(self) -> int:
        """Stop accepting writes: drop client connections first (commits waiting for a
        semi-sync acknowledgement would otherwise hold SET read_only for up to the semi-sync
        timeout; killed, they are never acknowledged), then read_only ON, then drop whatever
        connected in between. Returns how many connections were dropped."""
        killed = self.kill_client_connections()
        self.set_read_only(True)
        return killed + self.kill_client_connections()

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
            "AND NOT (user = 'root' AND host = 'localhost')")
        killed = 0
        for (cid,) in rows:
            try:
                self.execute(f"KILL CONNECTION {int(cid)}")
                killed += 1
            except MySQLError:
                pass  # it ended by itself meanwhile
        return killed


def create_users_sql(*, root_password: str, database: str, user: str, password: str,
                     repl_user: str, repl_password: str) -> list[tuple[str, tuple[str, ...]]]:
    """The first-boot statements, as (sql, args) pairs (values are bound, never formatted in).

    root@'%' gets every privilege except READ ONLY ADMIN, so read_only fences it too; only
    root@localhost over the unix socket (the supervisor, or an operator inside the container)
    may turn read_only off. Nothing here is written to the binary log.
    """
    stmts: list[tuple[str, tuple[str, ...]]] = [
        ("SET SESSION sql_log_bin = 0", ()),
        ("ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password "
         "USING PASSWORD(%s)", (root_password,)),
        ("CREATE USER IF NOT EXISTS root@'%%' IDENTIFIED BY %s", (root_password,)),
        ("GRANT ALL PRIVILEGES ON *.* TO root@'%%' WITH GRANT OPTION", ()),
        ("REVOKE READ ONLY ADMIN ON *.* FROM root@'%%'", ()),
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


def old_primary_cannot_write(address: str, user: str, password: str,
                             timeout: float = 0.5) -> bool:
    """True only when the former primary at `address` surely cannot accept writes: nothing
    listens on its MariaDB port (connection refused: its mysqld is gone, and a restarted one
    starts read-only), or it answers with read_only on. A time-out proves nothing (paused or
    partitioned): the caller then waits out the fence grace."""
    try:
        conn = pymysql.connect(host=address, port=3306, user=user, password=password,
                               connect_timeout=timeout, read_timeout=timeout,
                               write_timeout=timeout)
    except pymysql.err.OperationalError as exc:
        # 2003 "Can't connect ... ([Errno 111] Connection refused)": nothing listens there.
        return bool(exc.args) and exc.args[0] == 2003 and "Connection refused" in str(exc)
    except (pymysql.MySQLError, OSError):
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@global.read_only")
            row = cur.fetchone()
            return bool(row and row[0])
    except (pymysql.MySQLError, OSError):
        return False
    finally:
        try:
            conn.close()
        except Exception:
            pass
