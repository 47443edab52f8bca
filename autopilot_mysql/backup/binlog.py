"""MariaDB binary log files, read as bytes: just enough of the format to cut them into whole
transactions by GTID, for the archive (archive.py) and point-in-time recovery (pitr.py).

A file is the magic `\\xfebin`, a Format_description event, then events. Every event starts
with a 19-byte header: timestamp (u32, seconds), type (u8), server_id (u32), event length
(u32, the header and the checksum included), next position (u32), flags (u16). A transaction
(an "event group") starts with a GTID event, whose body starts with seq_no (u64) and domain_id
(u32), and runs to the next GTID event; the events that are never part of one (rotate, stop,
binlog checkpoint, GTID list, format description) are left out of it.

A *segment* is a valid binary log file of its own: the magic, the source file's Format
description event (it carries the checksum algorithm the events were written with), then whole
transactions copied byte for byte. mariadb-binlog reads a segment like any binary log.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import SnapshotError
from ..gtid import Gtid

MAGIC = b"\xfebin"
HEADER = 19
STOP, ROTATE, FORMAT_DESCRIPTION = 3, 4, 15
BINLOG_CHECKPOINT, GTID, GTID_LIST, START_ENCRYPTION = 161, 162, 163, 164
OUTSIDE = frozenset({STOP, ROTATE, FORMAT_DESCRIPTION, BINLOG_CHECKPOINT, GTID_LIST})
QUERY, XID, XA_PREPARE = 2, 16, 38
COMMITS = frozenset({QUERY, XID, XA_PREPARE})  # the events a transaction can end with


class BinlogError(SnapshotError):
    """A binary log file or segment that cannot be read as one."""


@dataclass(frozen=True)
class Transaction:
    gtid: Gtid
    timestamp: int  # the GTID event's, in Unix seconds: when the transaction was written
    start: int  # offset of its GTID event in the file
    end: int  # offset just past its last event
    events: int


@dataclass(frozen=True)
class Header:
    """The magic and the Format_description event of a file, copied as they are."""

    raw: bytes


def _header(data: bytes | memoryview, off: int) -> tuple[int, int, int, int]:
    ts, typ, server, length = struct.unpack_from("<IBII", data, off)
    return ts, typ, server, length


def read_header(data: bytes) -> tuple[Header, int]:
    """The file's header and the offset of its first event after the Format description."""
    if data[:4] != MAGIC:
        raise BinlogError("not a binary log (no \\xfebin magic)")
    if len(data) < 4 + HEADER:
        raise BinlogError("a binary log shorter than its first event header")
    _, typ, _, length = _header(data, 4)
    if typ != FORMAT_DESCRIPTION or len(data) < 4 + length:
        raise BinlogError("a binary log whose first event is not a whole Format_description")
    return Header(bytes(data[:4 + length])), 4 + length


def transactions(data: bytes, start: int, end: int | None = None) -> Iterator[Transaction]:
    """The whole transactions in data[start:end] (end: the file's end, or the position the
    server reports as the end of what it has written). A transaction is whole when the next
    one, or an event outside any transaction (a rotate at the end of a closed file), follows
    it, or when it ends exactly at `end` with its commit (an Xid, a Query such as COMMIT or
    DDL, an XA PREPARE): a log cut by a crash never yields its last, partial transaction.
    Raises BinlogError on an encrypted log or a broken event chain."""
    limit = len(data) if end is None else min(end, len(data))
    off = start
    current: list[int] | None = None  # [seq, domain, server, ts, start, end, events, type]
    while off + HEADER <= limit:
        ts, typ, server, length = _header(data, off)
        if length < HEADER:
            raise BinlogError(f"a broken event at offset {off} (length {length})")
        if off + length > limit:
            break  # an event still being written
        if typ == START_ENCRYPTION:
            raise BinlogError("the binary log is encrypted; the archive reads plain logs only")
        if typ == GTID:
            if current is not None:
                yield _done(current)
            seq, domain = struct.unpack_from("<QI", data, off + HEADER)
            current = [seq, domain, server, ts, off, off + length, 1, typ]
        elif typ in OUTSIDE:
            if current is not None:
                yield _done(current)
                current = None
        elif current is not None:
            current[5] = off + length
            current[6] += 1
            current[7] = typ
        off += length
    if current is not None and current[5] == limit and current[7] in COMMITS:
        yield _done(current)


def _done(c: list[int]) -> Transaction:
    seq, domain, server, ts, start, end, events, _ = c
    return Transaction(Gtid(domain, server, seq), ts, start, end, events)


def segment(header: Header, data: bytes, txs: list[Transaction]) -> bytes:
    """A binary log of its own: `header`, then `txs` (from `data`, in order) byte for byte."""
    return header.raw + b"".join(data[t.start:t.end] for t in txs)


def read_segment(blob: bytes) -> tuple[Header, list[Transaction]]:
    """A segment's header and every transaction in it (the last one too: a segment holds
    whole transactions only)."""
    header, first = read_header(blob)
    return header, list(transactions(blob, first, len(blob)))


def read_file(path: Path, end: int | None = None) -> bytes:
    """A binary log file's bytes, up to `end` when given."""
    with open(path, "rb") as f:
        return f.read() if end is None else f.read(end)
