"""Shared fixtures. Integration tests run on the namespace test bed (tests/testbed)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.testbed.bed import PREFIX, ROOT_DIR, TestBed, bed_lock, other_live_beds
from tests.testbed.components import S3Server, start_minio
from tests.testbed.util import run


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when in ("setup", "call") and report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture
def s3(bed: TestBed) -> S3Server:
    """A MinIO host on the bed (snapshots)."""
    h = bed.add_host("s3")
    h.boot()
    return start_minio(h)


FAILED = pytest.StashKey[bool]()
LOG_TAIL = 60


@pytest.fixture
def bed(request: pytest.FixtureRequest) -> Iterator[TestBed]:
    """A fresh test bed per test: hosts, bridge and processes are gone when the test ends.
    When the test failed, every host's logs are kept and their ends printed first (the logs
    go with the bed); APM_KEEP_LOGS=1 keeps them after a pass too (to trace a figure)."""
    with TestBed() as b:
        yield b
        failed = request.node.stash.get(FAILED, False)
        if not failed and os.environ.get("APM_KEEP_LOGS") != "1":
            return
        keep = Path(os.environ.get("APM_FAILED_LOGS", "/tmp/apm-failed-logs")) / b.id
        keep.mkdir(parents=True, exist_ok=True)
        for host in b.hosts.values():
            for f in host.dir.glob("*.log"):
                shutil.copy(f, keep / f"{host.name}-{f.name}")
        print(f"\n===== every host's logs are kept in {keep} =====")
        if not failed:
            return
        dump_stacks(b, keep)
        for host in b.hosts.values():
            log = host.dir / "pid1.log"
            if log.exists():
                lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
                print(f"\n===== {host.name}: last {len(lines)} lines of {log} =====")
                print("\n".join(lines))


def dump_stacks(bed: TestBed, keep: Path) -> None:
    """The Python stacks of every supervisor still running (py-spy), beside the logs: a stuck
    loop shows where it is stuck."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return
    for host in bed.hosts.values():
        for pid in host.processes():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"supervise" in cmd:
                out = run([spy, "dump", "--pid", str(pid)], check=False, timeout=30)
                (keep / f"{host.name}-stacks-{pid}.txt").write_text(out.stdout + out.stderr)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the whole suite: no namespace, bridge or process of the test bed may remain.
    With pytest -n, only the controller looks, once every worker is done (a worker that
    finished first would see the beds of those still running)."""
    if hasattr(session.config, "workerinput"):
        return
    with bed_lock():
        others = other_live_beds()  # a demo, or another run that is still going, is not ours
        demo_ns = {ns for st in others for ns in st["netns"]}
        demo_pids = {p for ns in demo_ns
                     for p in run(["ip", "netns", "pids", ns], check=False).stdout.split()}
        ours = [line.split()[0] for line in run(["ip", "netns", "list"], check=False)
                .stdout.splitlines()
                if line.startswith(PREFIX) and line.split()[0] not in demo_ns]
        ps = run(["ps", "-eo", "pid=,args="], check=False).stdout.splitlines()
    procs = [p for p in ps if (f"{ROOT_DIR}/{PREFIX}-" in p or "autopilot-mysql run" in p)
             and p.split()[0] not in demo_pids]
    if ours or procs:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"left behind by the test bed: namespaces {ours}, processes {procs}"
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(message, red=True, bold=True)
        else:
            print(message, file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
