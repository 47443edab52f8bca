"""Small, dependency-free helpers: clocks, sizes, logging set-up."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterable
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds; a test passes a fake to replay a history without sleeping."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'512M', '2G', '1073741824' -> bytes. Raises ValueError on anything else."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(text)
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def format_size(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit] and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage()}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    logging.Formatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "botocore", "boto3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


KNOCK_TIMEOUT = 0.3  # seconds a connection attempt to a peer's port may take
KNOCK_AGAIN = 0.05  # seconds between the two knocks that must both be refused


def port_refused(host: str, port: int, timeout: float = KNOCK_TIMEOUT) -> bool:
    """Whether a TCP connection to host:port is refused: the host's kernel answers and nothing
    listens there. False when it is accepted, times out or fails in any other way (a silent
    host proves nothing)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def nothing_listens(host: str, ports: Iterable[int],
                    knock: Callable[[str, int], bool] = port_refused,
                    sleep: Callable[[float], object] = time.sleep) -> bool:
    """Every one of `ports` on `host` refused a connection twice, KNOCK_AGAIN apart (the first
    that does not ends the knocking)."""
    ports = tuple(ports)
    for attempt in range(2):
        if attempt:
            sleep(KNOCK_AGAIN)
        if not all(knock(host, port) for port in ports):
            return False
    return True
