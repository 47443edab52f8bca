"""etc/haproxy.cfg on a test-bed host: servers from Consul DNS, role endpoints as checks.
Writes through port 3306 reach the primary, reads through 3307 a replica, and after a
failover 3306 follows the new primary with no change to the configuration."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pymysql
import pytest
import requests

from tests.testbed.bed import TestBed
from tests.testbed.cluster import APP_DB, APP_PASSWORD, APP_USER, Node, boot_cluster, start_router
from tests.testbed.components import HAProxy, start_haproxy
from tests.testbed.util import wait_until

pytestmark = pytest.mark.integration


# Patroni's documented HAProxy example, with MariaDB's port and our HEALTH_PORT.
PATRONI_STYLE = """global
    maxconn 100
defaults
    mode tcp
    retries 2
    timeout client 30m
    timeout connect 4s
    timeout server 30m
    timeout check 5s
listen primary
    bind *:5000
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions
{servers}
listen replicas
    bind *:5001
    balance roundrobin
    option httpchk OPTIONS /replica
    http-check expect status 200
    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions
{servers}
"""


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
    # From HAProxy's first second (every server it just resolved counts as up until a check
    # fails): a connection through 3306 either is refused or reaches the writable primary.
    reached: list[int] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3 or len(reached) < 10:
        try:
            reached.append(lb_query(lb, 3306, "SELECT @@read_only")[0][0])
        except pymysql.MySQLError:
            time.sleep(0.02)  # refused while more than one server counts as up
        assert time.monotonic() - t0 < 90, "port 3306 never reached the primary"
    assert set(reached) == {0}, f"{reached.count(1)} connection(s) reached a read-only node"
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

    # A configuration written for Patroni (its documented example: static servers, `option
    # httpchk OPTIONS /primary`, OPTIONS /replica) routes the same way, unchanged.
    patroni = start_haproxy(lb.host, PATRONI_STYLE.format(servers="\n".join(
        f"    server {n.name} {n.host.ip}:3306 maxconn 100 check port 9200" for n in nodes)),
        [5000, 5001], name="haproxy-patroni")
    wait_until(lambda: lb_query(patroni, 5000, "SELECT @@hostname, @@read_only")[0]
               == (primary_host, 0), timeout=30, what="Patroni-style 5000 to reach the primary")
    wait_until(lambda: lb_query(patroni, 5001, "SELECT @@read_only")[0][0] == 1, timeout=30,
               what="Patroni-style 5001 to reach a replica")
    patroni.proc.terminate()
    patroni.proc.wait(10)

    # HAProxy's own Prometheus exporter, parsed by prometheus_client: one server up in the
    # write backend, two in the read backend.
    from prometheus_client.parser import text_string_to_metric_families
    text = requests.get(f"http://{lb.host.ip}:8404/metrics", timeout=5).text
    up = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "haproxy_server_status":
            for s in fam.samples:
                if s.labels.get("state") == "UP" and s.value == 1:
                    up[s.labels["proxy"]] = up.get(s.labels["proxy"], 0) + 1
    assert up == {"mysql_primary": 1, "mysql_replicas": 2}, up

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


def test_two_routers_share_one_virtual_ip_and_losing_its_holder_costs_a_reconnect(
        bed: TestBed) -> None:
    """Issue 12, behaviour 2: two HAProxy hosts, keepalived beside each (the image's own
    entrypoint and etc/keepalived.conf.template), VRRP on the bed's bridge. Clients write
    to the virtual IP; the host holding it dies (its link first, as a machine that loses
    power goes silent, then its processes): the other router takes the address over and
    the same client writes again through the same address, losing nothing acknowledged."""
    from tests.testbed.components import holds_address, start_keepalived
    from tests.testbed.workload import Writer, create_table, missing_on

    nodes = boot_cluster(bed, 3)
    p = next(n for n in nodes if n.http("/primary") == 200)
    create_table(p)
    vip = str(bed.net.network_address + 250)
    routers = [start_router(bed, "lb"), start_router(bed, "lb2")]
    for r, priority in zip(routers, (150, 100), strict=True):
        start_keepalived(r.host, vip=vip, prefix=bed.net.prefixlen, priority=priority)
    holder = wait_until(lambda: next((r.host for r in routers if holds_address(r.host, vip)),
                                     None), timeout=30, what=f"a router holding {vip}")
    writer = Writer(vip)
    writer.start()
    wait_until(lambda: len(writer.acked) > 20, timeout=60, what=f"writes through {vip}")
    other = next(r.host for r in routers if r.host is not holder)
    t0 = time.monotonic()
    bed.isolate(holder)
    holder.kill()
    wait_until(lambda: holds_address(other, vip), timeout=30,
               what=f"{other.name} to take {vip} over")
    took_over = time.monotonic() - t0
    wait_until(lambda: any(a.at > t0 for a in writer.acked.values()), timeout=60,
               what=f"writes through {vip} again")
    writes_again = min(a.at for a in writer.acked.values() if a.at > t0) - t0
    writer.halt()
    wait_until(lambda: not missing_on(p, set(writer.acked)), timeout=30,
               what="every acknowledged row on the primary")
    print(f"VIP {vip}: {holder.name} lost; {other.name} held it after {took_over:.1f}s, "
          f"writes through it again after {writes_again:.1f}s "
          f"({len(writer.acked)} acknowledged, {writer.errors} errors)")
