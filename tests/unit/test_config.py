"""Settings from the environment: defaults, aliases, _FILE secrets, and every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from autopilot_mysql.config import load_settings
from autopilot_mysql.exceptions import ConfigError

GOOD = {"MARIADB_ROOT_PASSWORD": "r", "MYSQL_REPL_PASSWORD": "p", "NODE_NAME": "db1"}


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    assert err.value.exit_code == 2
    return err.value.problems


def test_minimal_environment_gets_documented_defaults() -> None:
    s = load_settings(GOOD)
    assert (s.consul_host, s.consul_port, s.service_name, s.health_port) == (
        "consul", 8500, "mysql", 9200)
    assert s.datadir == Path("/var/lib/mysql") and s.socket == Path("/run/mysqld/mysqld.sock")
    assert s.repl_user == "repl" and not s.consul_agent and s.buffer_pool_size is None
    assert s.service_id == "mysql-db1"


def test_official_image_aliases_and_file_secrets(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    s = load_settings({"MYSQL_ROOT_PASSWORD_FILE": str(secret), "MYSQL_REPL_PASSWORD": "p",
                       "MYSQL_USER": "app", "MYSQL_PASSWORD": "x", "MYSQL_DATABASE": "shop",
                       "CONSUL": "10.0.0.2:8501", "INNODB_BUFFER_POOL_SIZE": "1G",
                       "CONSUL_AGENT": "yes"})
    assert s.root_password == "from-file"  # trailing newline of the file is not part of it
    assert (s.user, s.password, s.database) == ("app", "x", "shop")
    assert (s.consul_host, s.consul_port, s.consul_agent) == ("10.0.0.2", 8501, True)
    assert s.buffer_pool_size == 1 << 30


@pytest.mark.parametrize("env,var", [
    ({}, "MARIADB_ROOT_PASSWORD"),
    ({"MARIADB_ROOT_PASSWORD_FILE": "/nonexistent/secret"}, "MARIADB_ROOT_PASSWORD_FILE"),
    ({"CONSUL": "consul:port"}, "CONSUL"),
    ({"CONSUL": "bad host!:8500"}, "CONSUL"),
    ({"CONSUL": "ftp://consul:8500"}, "CONSUL"),
    ({"CONSUL_ENCRYPT": "not-a-key"}, "CONSUL_ENCRYPT"),
    ({"CONSUL_CACERT": "/nonexistent/ca.pem"}, "CONSUL_CACERT"),
    ({"CONSUL_DATACENTER": "dc 1"}, "CONSUL_DATACENTER"),
    ({"HEALTH_PORT": "http"}, "HEALTH_PORT"),
    ({"HEALTH_PORT": "70000"}, "HEALTH_PORT"),
    ({"LOG_LEVEL": "VERBOSE"}, "LOG_LEVEL"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"INNODB_BUFFER_POOL_SIZE": "lots"}, "INNODB_BUFFER_POOL_SIZE"),
    ({"INNODB_BUFFER_POOL_SIZE": "1M"}, "INNODB_BUFFER_POOL_SIZE"),
    ({"MARIADB_USER": "app"}, "MARIADB_PASSWORD"),
    ({"MARIADB_USER": "root", "MARIADB_PASSWORD": "x"}, "MARIADB_USER"),
    ({"MARIADB_DATABASE": "a`b"}, "MARIADB_DATABASE"),
    ({"SERVICE_NAME": "My_Service"}, "SERVICE_NAME"),
    ({"CONSUL_AGENT": "maybe"}, "CONSUL_AGENT"),
    ({"STOP_TIMEOUT": "-3"}, "STOP_TIMEOUT"),
    ({"SESSION_TTL": "5"}, "SESSION_TTL"),
    ({"LOOP_WAIT": "5"}, "LOOP_WAIT"),
    ({"MYSQL_DATADIR": "relative/dir"}, "MYSQL_DATADIR"),
    ({"ADVERTISE_ADDRESS": "db1.example"}, "ADVERTISE_ADDRESS"),
    ({"MARIADB_ROOT_PASSWORD": "a", "MYSQL_ROOT_PASSWORD": "b"}, "MARIADB_ROOT_PASSWORD"),
])
def test_each_bad_value_is_named_with_an_example(env: dict[str, str], var: str) -> None:
    base = dict(GOOD)
    if any(k.startswith(("MARIADB_ROOT", "MYSQL_ROOT")) for k in env) or not env:
        base.pop("MARIADB_ROOT_PASSWORD")
    found = problems({**base, **env})
    assert any(p.startswith(var) and "Example:" in p for p in found), found


def test_all_problems_are_reported_at_once_and_no_secret_is_echoed() -> None:
    found = problems({"MARIADB_ROOT_PASSWORD": "s3cr3t-value", "HEALTH_PORT": "x",
                      "LOG_LEVEL": "loud", "CONSUL": "::::"})
    assert len(found) >= 4  # port, level, consul, missing repl password
    assert {p.split(":")[0] for p in found} >= {"HEALTH_PORT", "LOG_LEVEL", "CONSUL",
                                                "MYSQL_REPL_PASSWORD"}
    assert "s3cr3t-value" not in "\n".join(found)


def test_redacted_settings_hide_secrets() -> None:
    doc = load_settings({**GOOD, "MARIADB_USER": "app", "MARIADB_PASSWORD": "apppw"}).redacted()
    text = repr(doc)
    assert "apppw" not in text and doc["root_password"] == "<set>"


def test_cluster_settings_follow_the_same_rules_as_the_environment() -> None:
    """Behaviour 6: the shared settings in Consul are validated like the environment, so the
    fence rule (LOOP_WAIT <= SESSION_TTL / 4) holds there too; unknown names are refused."""
    from autopilot_mysql.config import cluster_settings

    cs = cluster_settings({"LOOP_WAIT": "1", "SESSION_TTL": "10", "SEMI_SYNC_TIMEOUT": "0",
                           "FAILSAFE": "false"})
    assert (cs.loop_wait, cs.lease, cs.semi_sync_timeout, cs.failsafe) == (1.0, 3.0, 0.0, False)
    assert cluster_settings(cs.doc()) == cs
    with pytest.raises(ConfigError, match="LOOP_WAIT.*too long"):
        cluster_settings({"LOOP_WAIT": "5", "SESSION_TTL": "10"})
    with pytest.raises(ConfigError, match="STOP_TIMEOUT: not a cluster-wide setting"):
        cluster_settings({"STOP_TIMEOUT": "3"})


def test_tags_are_read_and_published_as_patroni_names_them() -> None:
    s = load_settings({**GOOD, "NOFAILOVER": "true", "NOLOADBALANCE": "yes"})
    assert s.nofailover and s.noloadbalance
    assert s.tags == {"nofailover": "true", "noloadbalance": "true"}
    assert load_settings(GOOD).tags == {}
    with pytest.raises(ConfigError) as e:
        load_settings({**GOOD, "NOFAILOVER": "sometimes"})
    assert "NOFAILOVER" in str(e.value)


def test_consul_access_as_consuls_own_cli_reads_it(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    s = load_settings({**GOOD, "CONSUL": "https://consul", "CONSUL_HTTP_TOKEN_FILE": str(token),
                       "CONSUL_DATACENTER": "eu1"})
    assert (s.consul_host, s.consul_port, s.consul_scheme) == ("consul", 8501, "https")
    assert s.consul_client() == {"host": "consul", "port": 8501, "scheme": "https",
                                 "token": "s3cr3t-token", "dc": "eu1", "verify": True}
    assert "s3cr3t-token" not in str(s.redacted())
    # With a local agent the supervisor speaks plain http on loopback, the token alike.
    s = load_settings({**GOOD, "CONSUL_AGENT": "true", "CONSUL_HTTP_SSL": "true",
                       "CONSUL_HTTP_TOKEN": "t"})
    assert s.consul_client()["scheme"] == "http" and s.consul_client()["host"] == "127.0.0.1"
    assert s.consul_client()["token"] == "t"
    s = load_settings({**GOOD, "CONSUL": "consul:8501", "CONSUL_HTTP_SSL": "1",
                       "CONSUL_HTTP_SSL_VERIFY": "false"})
    assert s.consul_client()["scheme"] == "https" and s.consul_client()["verify"] is False


def test_consul_servers_a_local_agent_joins() -> None:
    """Three Consul servers: the local agent joins every one CONSUL names; without an agent
    a list is refused, naming the fix."""
    s = load_settings({**GOOD, "CONSUL": "consul-1, consul-2:8500,10.0.0.3",
                       "CONSUL_AGENT": "true"})
    assert s.consul_join == ("consul-1", "consul-2", "10.0.0.3")
    assert s.consul_host == "consul-1" and s.consul_client()["host"] == "127.0.0.1"
    assert load_settings({**GOOD, "CONSUL": "consul", "CONSUL_AGENT": "1"}).consul_join == (
        "consul",)
    with pytest.raises(ConfigError, match="CONSUL_AGENT=true"):
        load_settings({**GOOD, "CONSUL": "consul-1,consul-2"})
    with pytest.raises(ConfigError, match="'bad host!' is not a host name"):
        load_settings({**GOOD, "CONSUL": "consul-1,bad host!", "CONSUL_AGENT": "true"})


def test_s3_as_aws_users_expect() -> None:
    from autopilot_mysql.backup.store import SnapshotStore
    keys = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "example"}
    aws = load_settings({**GOOD, **keys, "S3_BUCKET": "prod-snapshots", "AWS_REGION": "eu-west-1",
                         "AWS_DEFAULT_REGION": "us-west-2"}).snapshots
    assert aws is not None and aws.region == "eu-west-1" and aws.endpoint == ""
    assert aws.addressing_style == "virtual"
    # boto3 itself builds the URL (no request is sent): virtual-hosted on AWS
    url = SnapshotStore(aws).client.generate_presigned_url(
        "get_object", Params={"Bucket": "prod-snapshots", "Key": "k"}, ExpiresIn=60)
    assert url.startswith("https://prod-snapshots.s3.eu-west-1.amazonaws.com/k"), url
    dotted = load_settings({**GOOD, "S3_BUCKET": "prod.snapshots",
                            "AWS_DEFAULT_REGION": "us-west-2"}).snapshots
    assert dotted is not None and dotted.addressing_style == "path"
    assert dotted.region == "us-west-2"
    other = load_settings({**GOOD, **keys, "S3_BUCKET": "snaps",
                           "AWS_ENDPOINT_URL_S3": "http://minio:9000"}).snapshots
    assert other is not None and other.endpoint == "http://minio:9000"
    assert other.addressing_style == "path" and other.region == "us-east-1"
    url = SnapshotStore(other).client.generate_presigned_url(
        "get_object", Params={"Bucket": "snaps", "Key": "k"}, ExpiresIn=60)
    assert url.startswith("http://minio:9000/snaps/k"), url
    mine = load_settings({**GOOD, "S3_BUCKET": "snaps", "S3_ENDPOINT": "http://a:9000",
                          "AWS_ENDPOINT_URL": "http://b:9000", "S3_ADDRESSING_STYLE": "virtual",
                          "S3_REGION": "eu-central-1", "AWS_REGION": "x"}).snapshots
    assert mine is not None and (mine.endpoint, mine.addressing_style, mine.region) == (
        "http://a:9000", "virtual", "eu-central-1")
    with pytest.raises(ConfigError, match="S3_ADDRESSING_STYLE"):
        load_settings({**GOOD, "S3_BUCKET": "snaps", "S3_ADDRESSING_STYLE": "dns"})


def test_node_name_survives_a_new_hostname(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    from autopilot_mysql.startup import stable_node_name
    caplog.set_level("INFO")
    env = {**GOOD, "MYSQL_DATADIR": str(tmp_path / "data")}
    first = load_settings({**env, "NODE_NAME": "c0ffee01"})
    assert stable_node_name(first, given=False).node_name == "c0ffee01"  # recorded
    recreated = load_settings({**env, "NODE_NAME": "beef0002"})  # as the new hostname
    assert stable_node_name(recreated, given=False, record=False).node_name == "c0ffee01"
    assert stable_node_name(recreated, given=False).node_name == "c0ffee01"
    assert "as recorded in the data directory" in caplog.text
    # Given explicitly, a new name wins, is recorded, and the rename is said.
    assert stable_node_name(recreated, given=True).node_name == "beef0002"
    assert "renamed" in caplog.text and "consul kv delete" in caplog.text
    assert stable_node_name(first, given=False).node_name == "beef0002"


def test_the_official_images_variables() -> None:
    s = load_settings({"MARIADB_RANDOM_ROOT_PASSWORD": "yes", "NODE_NAME": "db1",
                       "MARIADB_REPLICATION_USER": "replicator",
                       "MARIADB_REPLICATION_PASSWORD": "rp", "MARIADB_ROOT_HOST": "localhost",
                       "MARIADB_INITDB_SKIP_TZINFO": "1", "MARIADB_MASTER_HOST": "db0",
                       "MYSQL_ALLOW_EMPTY_PASSWORD": "yes"})
    assert s.random_root_password and s.root_password == "" and s.root_host == "localhost"
    assert (s.repl_user, s.repl_password, s.skip_tzinfo) == ("replicator", "rp", True)
    assert len(s.warnings) == 2
    assert any(w.startswith("MARIADB_MASTER_HOST is the official image's") for w in s.warnings)
    assert any("MYSQL_ALLOW_EMPTY_PASSWORD" in w for w in s.warnings)
    with pytest.raises(ConfigError, match="set only one"):
        load_settings({**GOOD, "MARIADB_RANDOM_ROOT_PASSWORD": "yes"})
    with pytest.raises(ConfigError, match="MARIADB_RANDOM_ROOT_PASSWORD=yes"):
        load_settings({"MYSQL_REPL_PASSWORD": "p", "NODE_NAME": "db1"})


def test_every_variable_may_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "db").write_text("shop\n")
    s = load_settings({**GOOD, "MARIADB_DATABASE_FILE": str(tmp_path / "db")})
    assert s.database == "shop"


def test_the_release_a_data_directory_was_last_upgraded_to(tmp_path: Path) -> None:
    from autopilot_mysql.mysql import datadir as dd
    from autopilot_mysql.startup import upgrade_if_needed
    env = {**GOOD, "MYSQL_DATADIR": str(tmp_path / "data")}
    s = load_settings(env)
    (tmp_path / "data").mkdir()
    # Data copied from a node of the same release (xtrabackup_info): nothing to do.
    (tmp_path / "data" / "xtrabackup_info").write_text(
        "tool_version = 10.11.19\nserver_version = 10.11.19-MariaDB-0+deb12u1-log\n")
    assert upgrade_if_needed(s, "10.11.19-MariaDB-0+deb12u1-log") is None
    assert dd.read_node_state(s.datadir)["mariadb_version"] == "10.11.19"
    assert upgrade_if_needed(s, "10.11.19-MariaDB") is None
    # A rebuild forgets it (the new data's own release is read again).
    dd.mark_done(s.datadir, "restored")
    assert "mariadb_version" not in dd.read_node_state(s.datadir)
