"""dcs.AgentRejoin against a loopback stand-in for the local Consul agent: an agent that
answers "No known Consul servers" is asked to join the servers again, from the rejoin's own
thread, and only while it keeps answering so. Against a real agent and a real cut:
tests/integration/test_consul_servers.py::
test_a_node_cut_off_from_every_host_has_its_agent_join_the_servers_again."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from autopilot_mysql.dcs import AgentRejoin, Consul
from autopilot_mysql.exceptions import DCSError
from tests.unit.fakes import loopback_http

SERVERS = ["10.9.0.1", "10.9.0.2"]


def joins(seen: list[tuple[str, str]]) -> list[str]:
    return [path for method, path in seen if path.startswith("/v1/agent/join/")]


def test_an_agent_without_servers_is_asked_to_join_them_again(
        caplog: pytest.LogCaptureFixture) -> None:
    lost = [False]

    def agent(method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if path.startswith("/v1/agent/join/"):
            lost[0] = False
            return 200, b""
        return (500, b"No known Consul servers") if lost[0] else (200, b"{}")

    with loopback_http(agent) as (port, seen):
        c = Consul("127.0.0.1", port, "mysql")
        c.servers = SERVERS
        stop = threading.Event()
        with caplog.at_level(logging.WARNING, "autopilot_mysql.dcs"):
            assert c.check_status("mysql-db1") is None  # an answer: nothing to do
            assert not c.servers_lost.is_set()
            lost[0] = True  # the agent marked every server failed
            with pytest.raises(DCSError, match="No known Consul servers"):
                c.cluster_state()
            assert c.servers_lost.is_set()
            rejoin = AgentRejoin(c, stop)
            rejoin.start()
            deadline = time.monotonic() + 5
            while len(joins(seen)) < 2:
                assert time.monotonic() < deadline, f"no join asked for: {seen}"
                time.sleep(0.01)
            time.sleep(0.3)
            stop.set()
            rejoin.join(5)
        assert joins(seen) == [f"/v1/agent/join/{s}" for s in SERVERS]  # once, both servers
        assert "asked it to join 10.9.0.1, 10.9.0.2 again: joined" in caplog.text


def test_a_join_that_fails_is_said_and_tried_again_only_while_the_agent_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    def agent(method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if path.startswith("/v1/agent/join/"):
            return 500, b"dial tcp 10.9.0.1:8301: i/o timeout"
        return 500, b"No known Consul servers"

    with loopback_http(agent) as (port, seen):
        c = Consul("127.0.0.1", port, "mysql")
        c.servers = SERVERS[:1]
        rejoin = AgentRejoin(c, threading.Event())
        with caplog.at_level(logging.WARNING, "autopilot_mysql.dcs"):
            c.servers_lost.set()
            assert not rejoin.rejoin()
        assert "could not join 10.9.0.1 (500 dial tcp 10.9.0.1:8301: i/o timeout) (1 tries)" \
            in caplog.text
        assert "still cut off" in caplog.text
        # The failed join itself does not ask for another: only a call refused for lack of
        # servers does.
        c.servers_lost.clear()
        rejoin.rejoin()
        assert not c.servers_lost.is_set()
        assert len(joins(seen)) == 2
