"""Snapshot and restore throughput against the raw pipelines, one table, one run.

On the test bed: MariaDB on host `db` filled with at least --gib GiB (random-ish rows that
compress like real data: half random bytes, half repeated text), MinIO on host `s3`.

- the limit: `mariabackup --stream=xbstream` read and thrown away (no storage at all);
- raw snapshot: `mariabackup --stream=xbstream` piped into boto3's own managed upload
  (upload_fileobj), no compression, no checksums;
- hand snapshot: what a competent operator scripts, `mariabackup --stream | zstd -3 -T0` into
  the same multipart upload (no checksums of its own, nothing verified);
- our snapshot: autopilot_mysql.backup.snapshot.take (zstd, per-part SHA-256, verified);
- raw restore: boto3 download of the raw object piped into `mbstream -x`;
- our restore: download + SHA-256 check + zstd -d + mbstream -x, then (reported apart)
  mariabackup --prepare, which the raw pipeline does not do.

Throughput is MiB of *database* (the raw xbstream size) per second, so compression counts as
the gain it is. The RSS of this process (which runs our code, as the supervisor would) is
sampled every 50 ms during each transfer. Never fails on a number.

    .venv/bin/python bench/snapshot.py [--gib 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autopilot_mysql.backup import snapshot  # noqa: E402
from autopilot_mysql.backup.store import SnapshotStore  # noqa: E402
from autopilot_mysql.config import SnapshotSettings  # noqa: E402
from tests.testbed.bed import TestBed  # noqa: E402
from tests.testbed.components import start_mariadb, start_minio  # noqa: E402


class RSS:
    """Peak and start RSS of this process over a block."""

    def __enter__(self) -> RSS:
        self.stop = threading.Event()
        self.start = self.peak = self.now()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    @staticmethod
    def now() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) << 10
        return 0

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, self.now())

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.t.join()


def fill(db: Any, gib: float) -> None:
    c = db.connect()
    cur = c.cursor()
    cur.execute("CREATE DATABASE IF NOT EXISTS bench")
    cur.execute("CREATE TABLE IF NOT EXISTS bench.t (id INT AUTO_INCREMENT PRIMARY KEY, "
                "a VARBINARY(4096), b VARCHAR(4096)) ENGINE=InnoDB")
    rows = int(gib * (1 << 30) / 8192)
    text = ("autopilot-mysql snapshot benchmark row " * 110)[:4096]
    batch = 200
    for _ in range(rows // batch):
        cur.executemany("INSERT INTO bench.t (a, b) VALUES (%s, %s)",
                        [(os.urandom(4096), text) for _ in range(batch)])
        c.commit()
    c.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    args = ap.parse_args()
    with TestBed() as bed:
        scratch = bed.root / "scratch"
        scratch.mkdir()
        dbh, s3h = bed.add_host("db"), bed.add_host("s3")
        dbh.boot()
        s3h.boot()
        s3 = start_minio(s3h)
        db = start_mariadb(dbh, extra=["innodb_buffer_pool_size=256M"])
        t0 = time.monotonic()
        fill(db, args.gib)
        size = sum(p.stat().st_size for p in db.datadir.rglob("*") if p.is_file())
        print(f"data directory {size / (1 << 30):.2f} GiB after filling, in "
              f"{time.monotonic() - t0:.0f}s", file=sys.stderr)
        client = s3.client()
        client.create_bucket(Bucket="bench")
        cfg = SnapshotSettings(bucket="bench", endpoint=s3.endpoint, prefix="bench",
                               region=s3.region, access_key=s3.access_key,
                               secret_key=s3.secret_key, verify_tls=True, timeout=60,
                               interval=0, binlog_rotations=0, keep=3, keep_days=0,
                               compression_level=3, verify=False)
        store = SnapshotStore(cfg)
        rows: list[tuple[str, float, int, int]] = []  # (what, seconds, bytes moved, rss peak)

        def backup(target: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                ["mariabackup", f"--defaults-file={db.defaults}", "--backup",
                 "--stream=xbstream", f"--target-dir={scratch / target}", "--user=root",
                 f"--socket={db.socket}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

        # the limit: the backup stream read and thrown away
        t = time.monotonic()
        mb = backup("limit")
        assert mb.stdout is not None
        while mb.stdout.read(1 << 20):
            pass
        assert mb.wait() == 0
        limit_s = time.monotonic() - t
        # raw snapshot
        with RSS() as mem:
            t = time.monotonic()
            mb = subprocess.Popen(
                ["mariabackup", f"--defaults-file={db.defaults}", "--backup",
                 "--stream=xbstream", f"--target-dir={scratch / 't'}", "--user=root",
                 f"--socket={db.socket}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert mb.stdout is not None
            client.upload_fileobj(mb.stdout, "bench", "raw/data.xbstream")
            assert mb.wait() == 0
            raw_s = time.monotonic() - t
        raw_bytes = client.head_object(Bucket="bench", Key="raw/data.xbstream")["ContentLength"]
        rows.append(("raw snapshot (stream -> upload_fileobj)", raw_s, raw_bytes,
                     mem.peak - mem.start))
        # what a competent operator scripts by hand: compressed on all cores, one multipart
        # upload (no checksums of its own, nothing verified)
        with RSS() as mem:
            t = time.monotonic()
            mb = backup("hand")
            zs = subprocess.Popen(["zstd", "-3", "-T0", "-q", "-c"], stdin=mb.stdout,
                                  stdout=subprocess.PIPE)
            assert mb.stdout is not None and zs.stdout is not None
            mb.stdout.close()  # zstd holds it now
            client.upload_fileobj(zs.stdout, "bench", "hand/data.xbstream.zst")
            assert zs.wait() == 0 and mb.wait() == 0
            hand_s = time.monotonic() - t
        rows.append(("hand snapshot (stream | zstd -3 -T0 -> upload)", hand_s, raw_bytes,
                     mem.peak - mem.start))
        # our snapshot
        with RSS() as mem:
            t = time.monotonic()
            m = snapshot.take(store, node="db", role="primary", primary="db", primary_binlog="",
                              cnf=db.defaults, socket_path=db.socket, compression_level=3)
            ours_s = time.monotonic() - t
        store.put_manifest(m)
        rows.append(("our snapshot (zstd, checked multipart)", ours_s, m.raw_bytes,
                     mem.peak - mem.start))
        # raw restore
        target = scratch / "raw-restore"
        target.mkdir()
        with RSS() as mem:
            t = time.monotonic()
            mx = subprocess.Popen(["mbstream", "-x", "-C", str(target)], stdin=subprocess.PIPE)
            assert mx.stdin is not None
            client.download_fileobj("bench", "raw/data.xbstream", mx.stdin)
            mx.stdin.close()
            assert mx.wait() == 0
            rawr_s = time.monotonic() - t
        rows.append(("raw restore (download -> mbstream -x)", rawr_s, raw_bytes,
                     mem.peak - mem.start))
        t = time.monotonic()
        snapshot.prepare(target)
        prep_s = time.monotonic() - t
        shutil.rmtree(target)
        # our restore
        target = scratch / "our-restore"
        orig_prepare = snapshot.prepare
        snapshot.prepare = lambda target: None  # timed apart, as for the raw restore
        try:
            with RSS() as mem:
                t = time.monotonic()
                snapshot.extract(store, m, target)
                ourr_s = time.monotonic() - t
        finally:
            snapshot.prepare = orig_prepare
        rows.append(("our restore (checked, zstd -d, mbstream -x)", ourr_s, m.raw_bytes,
                     mem.peak - mem.start))
        shutil.rmtree(target)

        print(f"\ndata directory {size / (1 << 30):.2f} GiB (binary logs included); xbstream "
              f"{raw_bytes / (1 << 20):.0f} MiB raw, {m.stored_bytes / (1 << 20):.0f} MiB "
              "stored with zstd -3 "
              f"({raw_bytes / max(1, m.stored_bytes):.2f}x)\n")
        print(f"{'pipeline':<46} {'seconds':>8} {'MiB/s':>8} {'ratio':>6} {'RSS +MiB':>9}")
        base = {0: raw_s, 1: raw_s, 2: raw_s, 3: rawr_s, 4: rawr_s}
        for i, (what, secs, nbytes, rss) in enumerate(rows):
            rate = nbytes / (1 << 20) / secs
            ratio = base[i] / secs  # throughput relative to the raw pipeline
            print(f"{what:<46} {secs:>8.1f} {rate:>8.0f} {ratio:>6.2f} {rss / (1 << 20):>9.1f}")
        print(f"{'mariabackup --prepare (ours includes it)':<46} {prep_s:>8.1f}")
        print(f"{'the limit: mariabackup --stream > /dev/null':<46} {limit_s:>8.1f} "
              f"{raw_bytes / (1 << 20) / limit_s:>8.0f}")
        print(f"\nour snapshot against the hand pipeline: {hand_s / ours_s:.2f}x its throughput "
              f"(target >= 0.9); against the limit: {ours_s / limit_s:.2f}x its time "
              "(target <= 1.3)")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
        print(f"\npeak RSS of this process: {peak} MiB; ratio = the raw pipeline's seconds / "
              "the row's seconds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
