"""GET /metrics: this node's state and the cluster's backups in the Prometheus text format,
built with prometheus_client from the same status snapshot /status serves, plus what every
node reads alike from Consul at scrape time (the latest snapshot, the binary-log archive).

prometheus_client is imported at the first scrape, not at start: a node nobody scrapes does
not pay for it. A scrape never blocks the HA loop (it runs on an HTTP worker thread), and a
Consul that does not answer leaves the cluster's series out and says so in
autopilot_mysql_cluster_scrape_ok, instead of failing the whole scrape.

Series (gauges; `_seconds` and `_bytes` as Prometheus names them):
    autopilot_mysql_role{role}                          1 for this node's role, 0 for the others
    autopilot_mysql_healthy, _writable, _lock_held      0/1 (writable and lock held: within the
                                                        primary's lease, as /primary answers)
    autopilot_mysql_mysqld_up, _consul_ok, _paused      0/1
    autopilot_mysql_consul_unreachable_seconds          since Consul last answered (0: it does)
    autopilot_mysql_mysqld_exits_total                  unexpected exits of mysqld (counter)
    autopilot_mysql_promotions                          the cluster's timeline: promotions
                                                        recorded in its history
    autopilot_mysql_replication_lag_seconds             a replica's Seconds_Behind_Master
    autopilot_mysql_last_cycle_age_seconds              since the HA loop last published
    autopilot_mysql_disk_free_bytes                     on the data volume
    autopilot_mysql_snapshot_last_age_seconds, _last_size_bytes, _last_duration_seconds,
    autopilot_mysql_snapshot_last_bad                   the snapshot the cluster's pointer names
    autopilot_mysql_binlog_archive_complete_age_seconds the data at risk (RPO): the archive
                                                        holds every transaction older than this
    autopilot_mysql_binlog_archive_last_transaction_age_seconds, _segments, _gaps
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .model import NodeStatus, ProcState, Role

if TYPE_CHECKING:
    from .dcs import Consul
    from .snapshots import Snapshots

ClusterMetrics = Callable[[], Mapping[str, float] | None]  # None: Consul did not answer


def cluster_series(consul: Consul, snapshots: Snapshots | None) -> dict[str, float] | None:
    """What every node reads alike from Consul at scrape time: the timeline, the latest
    snapshot and the binary-log archive (None: Consul did not answer)."""
    from .exceptions import DCSError
    try:
        values = {"promotions": float(consul.timeline())}
    except DCSError:
        return None
    if snapshots is not None:
        backups = snapshots.cluster_metrics()
        if backups is None:
            return None
        values.update(backups)
    return values

CLUSTER_HELP = {
    "snapshot_last_age_seconds": "seconds since the latest snapshot finished",
    "snapshot_last_size_bytes": "stored size of the latest snapshot",
    "snapshot_last_duration_seconds": "how long the latest snapshot took",
    "snapshot_last_bad": "1 when the latest snapshot was found unusable (a new one is due)",
    "binlog_archive_complete_age_seconds": "the data at risk (RPO): every transaction older "
                                           "than this is in the binary-log archive",
    "binlog_archive_last_transaction_age_seconds": "age of the newest archived transaction",
    "binlog_archive_segments": "segments archived so far",
    "binlog_archive_gaps": "gaps recorded in the archive that no later snapshot closed",
    "promotions": "promotions recorded in the cluster's history (its timeline): a rise is a "
                  "failover or a switchover",
}


def render(s: NodeStatus, now: float, cluster: ClusterMetrics) -> tuple[bytes, str]:
    """The exposition of node status `s` (`now` on the status's monotonic clock) and of
    `cluster()`; (body, content type)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"autopilot_mysql_{name}", doc, value=value)

    class Collector:
        def collect(self) -> Iterator[Any]:
            role = GaugeMetricFamily("autopilot_mysql_role", "this node's role (1) among the "
                                     "roles", labels=["role"])
            for r in Role:
                role.add_metric([r.value], 1.0 if s.role == r else 0.0)
            yield role
            lease = now < s.lock_valid_until
            yield gauge("healthy", "1 when this node passes its role's health check",
                        float(s.healthy))
            yield gauge("writable", "1 when this node accepts writes (within its lease)",
                        float(s.writable and lease))
            yield gauge("lock_held", "1 while this node holds the leader lock's lease",
                        float(s.role == Role.PRIMARY and lease))
            yield gauge("mysqld_up", "1 while mysqld runs", float(s.mysqld == ProcState.RUNNING))
            yield gauge("consul_ok", "1 when the last cycle reached Consul", float(s.consul_ok))
            yield gauge("consul_unreachable_seconds", "seconds since Consul last answered this "
                        "node (0 while it does)", s.consul_unreachable_for)
            yield gauge("paused", "1 while the cluster is in maintenance mode (no automatic "
                        "failover, mysqld not restarted)", float(bool(s.paused)))
            exits = CounterMetricFamily("autopilot_mysql_mysqld_exits", "unexpected exits of "
                                        "mysqld (crashes, kills) since the supervisor started; "
                                        "each is followed by a restart unless paused or failed")
            exits.add_metric([], float(s.mysqld_exits))
            yield exits
            if s.cycle_at:
                yield gauge("last_cycle_age_seconds", "seconds since the HA loop last "
                            "published this node's status", max(0.0, now - s.cycle_at))
            if s.lag is not None:
                yield gauge("replication_lag_seconds", "replication lag (Seconds_Behind_Master)",
                            float(s.lag))
            if s.disk_free is not None:
                yield gauge("disk_free_bytes", "free space on the data volume",
                            float(s.disk_free))
            values = cluster()
            yield gauge("cluster_scrape_ok", "1 when the cluster's series below were read from "
                        "Consul for this scrape", float(values is not None))
            for key, value in sorted((values or {}).items()):
                yield gauge(key, CLUSTER_HELP.get(key, key), value)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
