"""MariaDB GTID positions: parsing, comparison and the choice of a failover candidate.

A position such as `0-1-105,1-3-7` holds the last GTID applied in each replication domain
(domain-server_id-seqno). Within a domain seqnos only grow (gtid_strict_mode), so comparing
positions is comparing seqnos domain by domain. Pure functions, unit-tested.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Gtid:
    domain: int
    server_id: int
    seqno: int

    def __str__(self) -> str:
        return f"{self.domain}-{self.server_id}-{self.seqno}"


Position = dict[int, Gtid]  # domain -> last GTID


def parse(text: str) -> Position:
    """'0-1-105,1-3-7' -> {0: Gtid(0,1,105), 1: Gtid(1,3,7)}; '' -> {}.
    Raises ValueError on anything that is not a GTID list."""
    pos: Position = {}
    for part in text.replace(" ", "").replace("\n", "").split(","):
        if not part:
            continue
        d, s, n = part.split("-")
        g = Gtid(int(d), int(s), int(n))
        if g.domain in pos:
            raise ValueError(f"domain {g.domain} twice in {text!r}")
        pos[g.domain] = g
    return pos


_EVENT_GTID = re.compile(r"\bGTID (\d+)-(\d+)-(\d+)\b")


def of_event_info(info: str) -> Gtid | None:
    """The GTID of a Gtid event's Info column in SHOW BINLOG EVENTS: 'BEGIN GTID 0-1-105',
    'BEGIN GTID 0-1-105 cid=42' (group commit), 'GTID 0-1-7' (DDL); None for anything else."""
    m = _EVENT_GTID.search(info)
    return Gtid(int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def one(text: str) -> Gtid:
    """'0-1-105' -> Gtid(0, 1, 105); ValueError that shows a good one otherwise."""
    try:
        d, s, n = (int(x) for x in text.strip().split("-"))
    except ValueError:
        raise ValueError(f"{text!r} is not a GTID (domain-server-sequence, as 0-1-1234)") \
            from None
    return Gtid(d, s, n)


def render(pos: Mapping[int, Gtid]) -> str:
    return ",".join(str(pos[d]) for d in sorted(pos))


def covers(a: Mapping[int, Gtid], b: Mapping[int, Gtid]) -> bool:
    """True when `a` is at least as far as `b` in every domain `b` has."""
    return all(d in a and a[d].seqno >= g.seqno for d, g in b.items())


def merge(a: Mapping[int, Gtid], b: Mapping[int, Gtid]) -> Position:
    """Per domain, the further of the two (a replica's applied and received positions)."""
    out: Position = dict(a)
    for d, g in b.items():
        if d not in out or g.seqno > out[d].seqno:
            out[d] = g
    return out


def total(pos: Mapping[int, Gtid]) -> int:
    return sum(g.seqno for g in pos.values())


def best_candidate(positions: Mapping[str, Mapping[int, Gtid]],
                   preferred: str | None = None) -> str | None:
    """The node that should become primary: one whose position covers every other's, the
    `preferred` one (a switchover's target) or else the lowest name among equals. When no
    position covers all others (histories diverged across domains), the largest total seqno
    wins, then the lowest name: every node computes the same answer from the same inputs."""
    if not positions:
        return None
    names = sorted(positions)
    dominant = [n for n in names if all(covers(positions[n], positions[o]) for o in names)]
    if dominant:
        return preferred if preferred in dominant else dominant[0]
    return sorted(names, key=lambda n: (-total(positions[n]), n))[0]


def ahead_of(mine: Mapping[int, Gtid], base: Mapping[int, Gtid]) -> list[str]:
    """Domains in which `mine` went further than `base`, as 'from..to' ranges of GTIDs that
    `base` does not have (used to name errant transactions)."""
    out = []
    for d, g in sorted(mine.items()):
        b = base.get(d)
        if b is None or g.seqno > b.seqno:
            start = (b.seqno + 1) if b else 1
            out.append(f"{d}-{g.server_id}-{start}..{g}" if start != g.seqno else str(g))
    return out
