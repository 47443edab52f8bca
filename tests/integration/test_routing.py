"""etc/haproxy.cfg on a test-bed host: servers from Consul DNS, role endpoints as checks.
Writes through port 3306 reach the primary, reads through 3307 a replica, and after a
failover 3306 follows the new primary with no change to the configuration."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pymysql
import pytest

from tests.testbed.bed import TestBed
from tests.testbed.cluster import APP_DB, APP_PASSWORD, APP_USER, Node, boot_cluster, start_router
from tests.testbed.components import HAProxy
from tests.testbed.util import wait_until

pytestmark = pytest.mark.integration


def lb_query(lb: HAProxy, port: int, sql: str, args: tuple[object, ...] = ()) -> list[tuple]:
    with pymysql.connect(host=lb.host.ip, port=port, user=APP_USER, password=APP_PASSWORD,
                         database=APP_DB, connect_timeout=2, read_timeout=5,
                         autocommit=True) as c, c.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


@pytest.fixture
def routed(bed: TestBed) -> Iterator[tuple[list[Node], HAProxy]]:
    nodes = boot_cluster(bed, 3)
    yield nodes, start_router(bed)


def test_writes_go_to_the_primary_and_reads_to_replicas(routed: tuple[list[Node], HAProxy]
                                                        ) -> None:
    nodes, lb = routed
    # HAProxy puts a server it just resolved in rotation until `fall` checks failed (~1 s):
    # wait until its checks have settled, i.e. port 3306 reaches the primary every time.
    wait_until(lambda: all(lb_query(lb, 3306, "SELECT @@read_only")[0][0] == 0
                           for _ in range(10)), timeout=90,
               what="port 3306 to reach only the writable primary")
    lb_query(lb, 3306, "CREATE TABLE IF NOT EXISTS r (id INT PRIMARY KEY, host TEXT)")
    lb_query(lb, 3306, "INSERT INTO r VALUES (1, @@hostname)")
    primary_host = lb_query(lb, 3306, "SELECT host FROM r WHERE id = 1")[0][0]

    def read_on_replica() -> str | None:
        rows = lb_query(lb, 3307, "SELECT @@hostname, @@read_only, "
                                  "(SELECT COUNT(*) FROM r WHERE id = 1)")
        host, ro, n = rows[0]
        return host if ro == 1 and n == 1 else None

    replica_host = wait_until(read_on_replica, timeout=60,
                              what="port 3307 to reach a replica holding the row")
    assert replica_host != primary_host

    # Failover: kill the primary's host; 3306 follows the new primary, unchanged config.
    old = next(n for n in nodes if n.name == primary_host)
    old.host.kill()
    t0 = time.monotonic()

    def write_through_lb() -> bool:
        lb_query(lb, 3306, "INSERT INTO r VALUES (2, @@hostname)")
        return True

    wait_until(write_through_lb, timeout=60, what="a write through 3306 after the failover")
    print(f"writes through HAProxy resumed {time.monotonic() - t0:.1f}s after the kill")
    new_host = lb_query(lb, 3306, "SELECT host FROM r WHERE id = 2")[0][0]
    assert new_host != primary_host
    assert [r[0] for r in lb_query(lb, 3306, "SELECT id FROM r ORDER BY id")] == [1, 2]
