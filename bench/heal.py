"""A replica cut off from every host, then the cut healed: what the cluster goes through.

Each round boots three nodes (docker-compose.yml's environment), optionally with a client
committing on the primary, cuts one replica off from every other host (the Consul server, the
primary, the other replica) for --cut seconds, heals the cut and measures:
- how long after the heal the cut node reaches Consul again and replicates;
- the slowest answer of the primary's mysqld to a status query (0.5 s time-out, every 0.1 s);
- whether the primary's mysqld was restarted (crashed by the watchdog), and whether the old
  primary is primary at the end (it may win the election that follows its own crash).

What it showed on 2026-12-08 (MariaDB 10.11.19), and why it is here. With no commits on the
primary, the replica's return froze the primary's mysqld: the returning IO thread's dump
request kills the old dump thread of the same server_id (kill_zombie_dump_threads), which
waits in Ack_receiver::remove_slave for the semi-sync acknowledgement receiver to notice; that
thread sleeps in poll() without a time-out until an acknowledgement arrives, and none does
while nothing commits. Meanwhile new connections, information_schema.global_status and SHOW
SLAVE HOSTS wait, the supervisor's loop cannot renew the lease, and the watchdog crashes
mysqld once it runs out, and an election follows: seconds without writes nobody needed (gdb
stacks with --stacks). With a client
committing, the other replica's acknowledgements wake the receiver and nothing shows.

    .venv/bin/python bench/heal.py [--rounds 3] [--cut 20] [--writes] [--stacks FILE]

Never fails on a number.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.test_replication import primary  # noqa: E402
from tests.testbed.bed import TestBed  # noqa: E402
from tests.testbed.cluster import Node, boot_cluster  # noqa: E402
from tests.testbed.workload import Writer, create_table  # noqa: E402

STATUS = ("SELECT variable_value FROM information_schema.global_status "
          "WHERE variable_name = 'UPTIME'")


def status_query(node: Node, timeout: float = 0.5) -> tuple[float, bool]:
    """How long the status query took, and whether it answered."""
    t0 = time.monotonic()
    try:
        with pymysql.connect(unix_socket=str(node.socket), user="root",
                             connect_timeout=timeout, read_timeout=timeout) as c, \
                c.cursor() as cur:
            cur.execute(STATUS)
            cur.fetchall()
        return time.monotonic() - t0, True
    except (pymysql.MySQLError, OSError):
        return time.monotonic() - t0, False


def one_round(cut_s: float, writes: bool, stacks: str) -> dict[str, float]:
    with TestBed() as bed:
        nodes = boot_cluster(bed, 3, timeout=120)
        prim = primary(nodes)
        writer = None
        if writes:
            create_table(prim)
            writer = Writer(prim.host.ip, pause=0.05)
            writer.start()
        cut = next(n for n in nodes if n is not prim)
        pid = prim.mysqld_pid()
        rules = bed.partition([cut.host])
        time.sleep(cut_s)
        bed.heal(rules)
        healed = time.monotonic()
        back = slowest = 0.0
        failures = 0
        while time.monotonic() - healed < 30:
            took, answered = status_query(prim)
            slowest = max(slowest, took)
            if not answered:
                failures += 1
                if stacks and failures == 1:
                    out = subprocess.run(["gdb", "-p", str(prim.mysqld_pid()), "-batch", "-ex",
                                          "thread apply all bt 25"], capture_output=True,
                                         text=True, timeout=120, check=False).stdout
                    Path(stacks).write_text(out)
            if not back:
                try:
                    if cut.status()["consul_ok"] and cut.http("/replica") == 200:
                        back = time.monotonic() - healed
                except Exception:  # not answering yet: keep looking
                    pass
            if back and time.monotonic() - healed > back + 5:
                break
            time.sleep(0.1)
        kept = prim.http("/primary") == 200
        crashed = prim.mysqld_pid() != pid
        if writer is not None:
            writer.halt()
        return {"back": back or float("nan"), "slowest": slowest,
                "unanswered": float(failures), "kept": 1.0 if kept else 0.0,
                "crashed": 1.0 if crashed else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cut", type=float, default=20.0)
    ap.add_argument("--writes", action="store_true", help="a client commits on the primary")
    ap.add_argument("--stacks", default="", help="at the first unanswered query, write "
                    "gdb's stacks of the primary's mysqld to this file")
    args = ap.parse_args()
    rows = []
    for i in range(args.rounds):
        r = one_round(args.cut, args.writes, args.stacks)
        rows.append(r)
        print(f"round {i + 1}: cut node back {r['back']:.2f}s after the heal; primary's "
              f"slowest status query {r['slowest']:.2f}s, {r['unanswered']:.0f} unanswered; "
              f"primary's mysqld {'RESTARTED' if r['crashed'] else 'the same'}; the old primary "
              f"{'is primary' if r['kept'] else 'is NOT primary (a failover)'}", flush=True)
    print(f"\n| replica cut {args.cut:g}s then healed, {'with' if args.writes else 'no'} "
          f"commits on the primary, {args.rounds} rounds | median | min-max |")
    print("|---|---|---|")
    for key, label in (("back", "cut node reaches Consul and replicates, s after the heal"),
                       ("slowest", "primary's slowest status query, s (0.5 = timed out)")):
        vals = [r[key] for r in rows]
        print(f"| {label} | {statistics.median(vals):.2f} | {min(vals):.2f}-{max(vals):.2f} |")
    print(f"| rounds where the primary's mysqld was restarted (the watchdog) | "
          f"{sum(r['crashed'] for r in rows):.0f} of {len(rows)} | |")
    print(f"| rounds where the old primary is primary at the end | "
          f"{sum(r['kept'] for r in rows):.0f} of {len(rows)} | |")


if __name__ == "__main__":
    main()
