"""Point-in-time recovery: the data at risk (RPO) while a steady writer runs, and restore
throughput against the raw tools run by hand, in one run.

On the test bed: MariaDB on host `db` filled with --gib GiB, MinIO on `s3`, a Consul server on
`consul`. Our snapshot is taken, then our archiver (autopilot_mysql/backup/archive.py, the
class the supervisor runs; here on a primary alone, as it does when no replica keeps up)
archives the binary log every --interval seconds while one client commits --rate rows a
second for --minutes.

- RPO, sampled every 0.5 s while the writer runs, two ways: the data at risk (the newest
  commit's time minus the newest archived transaction's; the binary log stamps whole seconds,
  so up to 1 s pessimistic), and the age of `checked_at` (what /metrics exports: the archive
  is known complete up to it). Each archiver round's duration is timed too.
- Restore to the last transaction written:
  - ours: `autopilot_mysql.backup.pitr.restore` (the snapshot, then every archived segment
    downloaded, checked, filtered and replayed with `mariadb-binlog | mariadb`);
  - by hand: the same snapshot restored the same way, then `mariadb-binlog
    --start-position=<the snapshot's GTID> <the server's own binary logs> | mariadb`, the
    fastest an operator can do with the logs on local disk and nothing to download.
  Both end with CHECKSUM TABLE compared: the same data or the run says so.

    .venv/bin/python bench/pitr.py [--gib 1] [--minutes 10] [--rate 200] [--interval 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autopilot_mysql.backup import pitr, snapshot  # noqa: E402
from autopilot_mysql.backup.archive import BinlogArchiver  # noqa: E402
from autopilot_mysql.backup.store import SnapshotStore  # noqa: E402
from autopilot_mysql.config import SnapshotSettings  # noqa: E402
from autopilot_mysql.dcs import Consul  # noqa: E402
from autopilot_mysql.gtid import one  # noqa: E402
from autopilot_mysql.model import NodeStatus, Role  # noqa: E402
from autopilot_mysql.mysql.server import LocalServer  # noqa: E402
from bench.snapshot import fill  # noqa: E402
from tests.testbed.bed import TestBed  # noqa: E402
from tests.testbed.components import start_consul, start_mariadb, start_minio  # noqa: E402


def checksum(target: Path) -> str:
    out: list[str] = []

    def read(sock: Path) -> None:
        srv = LocalServer(sock, connect_timeout=2, read_timeout=None)
        out.append(" ".join(str(r[1]) for r in srv.execute(
            "CHECKSUM TABLE bench.t, bench.w EXTENDED")))
        srv.close()

    snapshot.throwaway_server(target, read)
    return out[0]


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=200.0, help="commits a second")
    ap.add_argument("--interval", type=float, default=5.0, help="BINLOG_ARCHIVE_INTERVAL")
    args = ap.parse_args()
    with TestBed() as bed:
        scratch = bed.root / "scratch"
        scratch.mkdir()
        ch, dbh, s3h = bed.add_host("consul"), bed.add_host("db"), bed.add_host("s3")
        for h in (ch, dbh, s3h):
            h.boot()
        agent = start_consul(ch)
        s3 = start_minio(s3h)
        db = start_mariadb(dbh, extra=["innodb_buffer_pool_size=256M", "sync_binlog=1"])
        t0 = time.monotonic()
        fill(db, args.gib)
        print(f"filled {args.gib} GiB in {time.monotonic() - t0:.0f}s", file=sys.stderr)
        s3.client().create_bucket(Bucket="bench")
        cfg = SnapshotSettings(bucket="bench", endpoint=s3.endpoint, prefix="bench",
                               region=s3.region, access_key=s3.access_key,
                               secret_key=s3.secret_key, verify_tls=True, timeout=60,
                               interval=0, binlog_rotations=0, keep=3, keep_days=0,
                               compression_level=3, verify=False,
                               archive_interval=args.interval)
        store = SnapshotStore(cfg)
        m = snapshot.take(store, node="db", role="primary", primary="db", primary_binlog="",
                          cnf=db.defaults, socket_path=db.socket, compression_level=3)
        store.put_manifest(m)
        host, port = agent.address.split(":")
        dcs = Consul(host, int(port), "bench")
        stop = threading.Event()
        status = NodeStatus(node="db", role=Role.PRIMARY, healthy=True)
        archiver = BinlogArchiver(cfg, store, dcs, node="db", datadir=db.datadir,
                                  socket=db.socket, status=lambda: status, members=lambda: (),
                                  max_lag=30, oldest_snapshot_gtid=lambda: m.gtid, stop=stop)
        rounds: list[float] = []
        tick = archiver.tick

        def timed() -> int:
            t1 = time.monotonic()
            try:
                return tick()
            finally:
                rounds.append(time.monotonic() - t1)

        archiver.tick = timed  # type: ignore[method-assign]
        archiver.start()
        # the writer, and the RPO samples while it runs
        samples: list[float] = []
        checked: list[float] = []
        newest = [0.0]  # the newest commit's time
        written = [0]
        done = threading.Event()

        def writer() -> None:
            c = db.connect()
            cur = c.cursor()
            cur.execute("CREATE TABLE bench.w (id INT PRIMARY KEY, at DOUBLE, "
                        "pad VARCHAR(200)) ENGINE=InnoDB")
            c.commit()
            end = time.monotonic() + args.minutes * 60
            nxt = time.monotonic()
            while time.monotonic() < end:
                written[0] += 1
                cur.execute("INSERT INTO bench.w VALUES (%s, %s, %s)",
                            (written[0], time.time(), "x" * 200))
                c.commit()
                newest[0] = time.time()
                nxt += 1 / args.rate
                time.sleep(max(0.0, nxt - time.monotonic()))
            c.close()
            done.set()

        threading.Thread(target=writer, daemon=True).start()
        time.sleep(min(10.0, args.minutes * 30))  # the first seconds: the archive starts
        while not done.wait(0.5):
            _, st = dcs.archive_state()
            if st and st.get("last_time"):
                samples.append(max(0.0, newest[0] - float(st["last_time"])))
                checked.append(time.time() - float(st.get("checked_at") or 0))
        c = db.connect()
        cur = c.cursor()
        cur.execute("SELECT @@gtid_binlog_pos")
        end_gtid = str(cur.fetchone()[0])
        cur.execute("SHOW BINARY LOGS")
        logs = [str(r[0]) for r in cur.fetchall()]
        c.close()
        t = time.monotonic()
        while (dcs.archive_state()[1] or {}).get("last") != end_gtid:
            time.sleep(0.2)
        catch_up = time.monotonic() - t
        stop.set()
        _, state = dcs.archive_state()
        segments = store.segments()
        # ours
        plan = pitr.make_plan([m], segments, state, pitr.Point(gtid=one(end_gtid)))
        ours = pitr.restore(store, plan, scratch / "ours")
        # by hand: the same snapshot, then the server's own binary logs
        hand_dir = scratch / "hand"
        t = time.monotonic()
        snapshot.extract(store, m, hand_dir)
        snapshot.chown_tree(hand_dir)
        hand_snap = time.monotonic() - t
        timing: list[float] = []

        def replay(sock: Path) -> None:
            t1 = time.monotonic()
            dump = subprocess.Popen(["mariadb-binlog", f"--start-position={m.gtid}",
                                     *[str(db.datadir / n) for n in logs]],
                                    stdout=subprocess.PIPE)
            client = subprocess.run(["mariadb", f"--socket={sock}", "--user=root",
                                     "--binary-mode", "--batch"], stdin=dump.stdout)
            assert dump.wait() == 0 and client.returncode == 0
            timing.append(time.monotonic() - t1)

        t = time.monotonic()
        snapshot.throwaway_server(hand_dir, replay, timeout=600)
        hand_replay = time.monotonic() - t
        same = checksum(scratch / "ours") == checksum(hand_dir)

        rpo = sorted(samples)
        print(f"\nsnapshot {m.raw_bytes / (1 << 30):.2f} GiB raw; writer {written[0]} commits in "
              f"{args.minutes:g} min ({args.rate:g}/s asked); archive interval {args.interval:g}s: "
              f"{len(segments)} segments, {sum(s.size for s in segments) >> 20} MiB\n")
        for what, xs in (("data at risk (newest commit - newest archived)", rpo),
                         ("age of checked_at (/metrics)", sorted(checked)),
                         ("archiver round", sorted(rounds))):
            if xs:
                print(f"{what}, {len(xs)} samples: median {statistics.median(xs):.1f}s, "
                      f"p95 {xs[int(len(xs) * 0.95) - 1]:.1f}s, max {xs[-1]:.1f}s")
        print(f"the archive caught up {catch_up:.1f}s after the last commit\n")
        print(f"{'restore to the last transaction':<52} {'seconds':>8} {'tx/s':>8} {'ratio':>6}")
        n = ours.transactions
        print(f"{'ours: replay (download, check, filter, apply)':<52} "
              f"{ours.replay_seconds:>8.1f} {n / ours.replay_seconds:>8.0f} "
              f"{hand_replay / ours.replay_seconds:>6.2f}")
        print(f"{'by hand: replay (local binlogs, --start-position)':<52} {hand_replay:>8.1f} "
              f"{n / hand_replay:>8.0f} {1.0:>6.2f}")
        print(f"{'ours: whole (snapshot + replay)':<52} "
              f"{ours.snapshot_seconds + ours.replay_seconds:>8.1f}")
        print(f"{'by hand: whole (snapshot + replay)':<52} {hand_snap + hand_replay:>8.1f}")
        print(f"\n{n} transactions, {ours.events} events replayed; ratio = by hand's seconds / "
              f"ours (1.0 = as fast); the mariadb-binlog | mariadb part of the hand replay "
              f"{timing[0]:.1f}s; same data both ways (CHECKSUM TABLE): "
              f"{'yes' if same else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
