"""Client workloads and checkers for fault tests and benchmarks.

Writer: a client thread that commits one row at a time to an address (HAProxy's write port, or
one node) and records every commit the server acknowledged, which server did, its GTID and when
(monotonic). An id is never retried: a commit whose answer was lost may have landed.

Checkers answer the two promises on outcomes a user sees: every acknowledged row is on every
node (no acknowledged write lost), and no two nodes were writable at once (ReadOnlyWatch).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import pymysql

from .bed import TestBed
from .cluster import APP_DB, APP_PASSWORD, APP_USER, Node
from .components import start_consul
from .util import wait_until


@dataclass
class Ack:
    server: str
    gtid: str
    at: float


@dataclass(eq=False)  # a Thread must stay hashable
class Writer(threading.Thread):
    host: str
    port: int = 3306
    table: str = "chaos"
    first_id: int = 1
    pause: float = 0.005
    acked: dict[int, Ack] = field(default_factory=dict)
    errors: int = 0
    last_error: str = ""

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)
        self.stop = threading.Event()
        self.next_id = self.first_id

    def run(self) -> None:
        conn = None
        server = ""
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = pymysql.connect(host=self.host, port=self.port, user=APP_USER,
                                           password=APP_PASSWORD, database=APP_DB,
                                           connect_timeout=2, read_timeout=5, write_timeout=5,
                                           autocommit=True)
                    with conn.cursor() as cur:
                        cur.execute("SELECT @@hostname")
                        server = str(cur.fetchone()[0])
                i = self.next_id
                self.next_id += 1
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {self.table} VALUES (%s, %s)", (i, server))
                    at = time.monotonic()
                    self.acked[i] = Ack(server, "", at)
                    cur.execute("SELECT @@last_gtid")
                    self.acked[i] = Ack(server, str(cur.fetchone()[0]), at)
                if self.pause:
                    time.sleep(self.pause)
            except (pymysql.MySQLError, OSError) as exc:
                self.errors += 1
                self.last_error = str(exc)[:200]
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                conn = None
                time.sleep(0.05)

    def halt(self) -> None:
        self.stop.set()
        self.join(10)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest stretch within [start, end] without an acknowledged commit."""
        a, b = longest_gap(self.acked.values(), start, end)
        return b - a


def longest_gap(acks: Iterable[Ack], start: float, end: float) -> tuple[float, float]:
    """Where the longest stretch within [start, end] without any of `acks` lies (from, to):
    for several clients' acknowledgements, the longest time no client got one."""
    times = sorted(a.at for a in acks if start <= a.at <= end)
    points = [start, *times, end]
    return max(zip(points, points[1:], strict=False), key=lambda ab: ab[1] - ab[0])


def create_table(node: Node, table: str = "chaos") -> None:
    with node.app() as c, c.cursor() as cur:
        cur.execute(f"CREATE TABLE IF NOT EXISTS {table} (id BIGINT PRIMARY KEY, "
                    "server VARCHAR(64)) ENGINE=InnoDB")


def ids_of(node: Node, table: str = "chaos") -> set[int]:
    with node.app() as c, c.cursor() as cur:
        cur.execute(f"SELECT id FROM {table}")
        return {int(r[0]) for r in cur.fetchall()}


def missing_on(node: Node, acked: set[int], table: str = "chaos") -> set[int]:
    try:
        return acked - ids_of(node, table)
    except pymysql.MySQLError:
        return set(acked)


def not_writable(node: Node) -> bool:
    """read_only on, or mysqld gone (a fence that crashed it): refused, or the connection
    lost under the query. A time-out proves nothing (it may be frozen)."""
    try:
        return read_only(node)
    except (pymysql.MySQLError, OSError) as exc:
        code = exc.args[0] if isinstance(exc, pymysql.MySQLError) and exc.args else None
        return code in (2002, 2003, 2006, 2013) and "timed out" not in str(exc)


def read_only(node: Node) -> bool:
    with pymysql.connect(unix_socket=str(node.socket), user="root", connect_timeout=0.5,
                         read_timeout=0.5) as c, c.cursor() as cur:
        cur.execute("SELECT @@read_only")
        return bool(cur.fetchone()[0])


def writes_through_consul_outage(bed: TestBed, client: Writer, seconds: float
                                 ) -> tuple[int, float]:
    """Kill the Consul server for `seconds` (a bounded look, not a wait for state) while
    `client` writes, start it again and wait for writes after. Returns the writes acknowledged
    meanwhile and the longest gap between them (from 1 s in)."""
    chost = bed.hosts["consul"]
    chost.kill_spawned(next(p for p in chost._spawned if p.poll() is None))
    t0 = time.monotonic()
    time.sleep(seconds)
    t1 = time.monotonic()
    accepted = sum(1 for a in client.acked.values() if t0 <= a.at <= t1)
    gap = client.longest_gap(t0 + 1, t1)
    start_consul(chost)
    wait_until(lambda: len([a for a in client.acked.values() if a.at > t1]) > 10, timeout=60,
               what="writes after Consul is back")
    return accepted, gap

