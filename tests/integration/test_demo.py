"""The demo as a user drives it: `make demo` (what docker-compose.yml describes: consul,
minio, one database node, haproxy, then scaled to three), writes through HAProxy's write
port and reads through its read port, `make demo-scale N=5` and back to 3, a snapshot in the
bucket, `make demo-down`. Run as subprocesses, as the make targets run them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator

import boto3
import pymysql
import pytest
from botocore.config import Config

from tests.testbed.bed import persistent_beds
from tests.testbed.cluster import APP_DB, APP_PASSWORD, APP_USER, S3_SECRET
from tests.testbed.util import REPO, wait_until

pytestmark = pytest.mark.integration


def demo(*args: str, timeout: float = 600) -> str:
    proc = subprocess.run([sys.executable, "-m", "tests.testbed.demo", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture
def running_demo() -> Iterator[dict[str, object]]:
    if persistent_beds():
        pytest.skip("a demo is running on this machine (make demo-down removes it)")
    try:
        out = demo("up")
        yield {"out": out, "state": persistent_beds()[0]}
    finally:
        if persistent_beds():
            demo("down")


def test_the_demo_as_a_user_runs_it(running_demo: dict[str, object]) -> None:
    out = str(running_demo["out"])
    state = running_demo["state"]
    assert isinstance(state, dict)
    hosts = state["hosts"]
    assert {"consul", "minio", "haproxy", "mysql-1", "mysql-2", "mysql-3"} <= set(hosts)
    lb = hosts["haproxy"]["ip"]
    # It tells the user to connect through HAProxy's ports.
    assert f"mariadb -h {lb} -P 3306" in out and f"mariadb -h {lb} -P 3307" in out, out

    def query(port: int, sql: str, args: tuple[object, ...] = ()) -> list[tuple]:
        with pymysql.connect(host=lb, port=port, user=APP_USER, password=APP_PASSWORD,
                             database=APP_DB, connect_timeout=3, autocommit=True) as c, \
                c.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    query(3306, "CREATE TABLE demo (id INT PRIMARY KEY, host VARCHAR(40))")
    query(3306, "INSERT INTO demo VALUES (1, @@hostname)")
    # (one query with an aggregate and @@read_only reads 0 on MariaDB 10.11: a subquery)
    wait_until(lambda: query(3307, "SELECT (SELECT COUNT(*) FROM demo), @@read_only") == [(1, 1)],
               timeout=30, what="the row read back through the read port, from a replica")
    # A snapshot in the bucket (the first is due at once; the first node made the bucket).
    s3 = boto3.client("s3", endpoint_url=f"http://{hosts['minio']['ip']}:9000",
                      aws_access_key_id="autopilot", aws_secret_access_key=S3_SECRET,
                      region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))

    def manifests() -> list[str]:
        try:
            listed = s3.list_objects_v2(Bucket="autopilot-mysql", Prefix="mysql/snapshots/")
        except s3.exceptions.NoSuchBucket:
            return []
        return [o["Key"] for o in listed.get("Contents", [])
                if o["Key"].endswith("manifest.json")]

    wait_until(lambda: manifests(), timeout=180, what="a snapshot in the bucket")
    # Scale to five (the new nodes start from the snapshot), then back to three.
    demo("scale", "5")
    names = sorted(n for n in persistent_beds()[0]["hosts"] if n.startswith("mysql-"))
    assert names == [f"mysql-{i}" for i in range(1, 6)]
    query(3306, "INSERT INTO demo VALUES (2, @@hostname)")
    demo("scale", "3")
    names = sorted(n for n in persistent_beds()[0]["hosts"] if n.startswith("mysql-"))
    assert names == ["mysql-1", "mysql-2", "mysql-3"]
    wait_until(lambda: query(3306, "SELECT COUNT(*) FROM demo") == [(2,)], timeout=60,
               what="both rows through the write port after scaling down")
    status = demo("status")
    roles = re.findall(r"^\s+mysql-\d+\s+\S+\s+(\w+),", status, re.M)
    assert sorted(roles) == ["primary", "replica", "replica"], status
    listed = subprocess.run([sys.executable, "-m", "autopilot_mysql", "list", "--url",
                             f"http://{hosts['mysql-1']['ip']}:9200", "-f", "json"],
                            capture_output=True, text=True, timeout=30)
    members = {m["name"] for m in json.loads(listed.stdout)["members"]}
    assert members >= {"mysql-1", "mysql-2", "mysql-3"}, members
    demo("down")
    assert not persistent_beds()
