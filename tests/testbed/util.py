"""Small helpers shared by the test bed: running commands, waiting with a deadline, tool paths."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

CACHE = Path(os.environ.get("APM_CACHE", str(Path.home() / ".cache" / "autopilot-mysql")))
REPO = Path(__file__).resolve().parents[2]


class TestBedError(RuntimeError):
    """Something the test bed itself could not do (not a failure of the product under test)."""

    __test__ = False  # not a pytest test class


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 60,
        input: bytes | None = None, env: Mapping[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; on failure raise with its stderr, never a bare exit code."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          input=input.decode() if input is not None else None,
                          env=dict(env) if env is not None else None)
    if check and proc.returncode != 0:
        raise TestBedError(f"{' '.join(argv)} exited {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def wait_until(probe: Callable[[], T | None], *, timeout: float, what: str,
               interval: float = 0.05) -> T:
    """Poll `probe` until it returns something truthy; say what was awaited on time-out.

    Exceptions raised by the probe count as "not yet"; the last one is reported on time-out.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:  # the probe's failure is "not yet", kept for the message
            last = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last!r})" if last else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(interval)


def tool(name: str) -> str:
    """Absolute path of a tool: the cache's Go builds first (consul, minio), then PATH."""
    cached = CACHE / "bin" / name
    if cached.exists():
        return str(cached)
    for d in ("/usr/sbin", "/sbin"):
        if (Path(d) / name).exists():
            return str(Path(d) / name)
    found = shutil.which(name)
    if not found:
        raise TestBedError(f"{name} not found in {CACHE / 'bin'} or on PATH: run scripts/setup.sh")
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_running(pid: int) -> bool:
    """Alive and not a zombie (a zombie is dead, waiting for its parent or init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def proc_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (tells a reused pid from the original)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])
