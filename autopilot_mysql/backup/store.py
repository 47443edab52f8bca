"""The object store side of snapshots: one S3-compatible bucket, under a prefix.

Layout, one "directory" per snapshot (ids sort by time):

    <prefix>/snapshots/<id>/data.xbstream.zst   the compressed xbstream, one multipart object
    <prefix>/snapshots/<id>/manifest.json       written only after the data object is verified

A snapshot without a manifest is not a snapshot (an upload that died halfway, or one being
written): `manifests()` never lists it, and retention removes its leftovers.

Contract of `upload`: it either returns a StoredObject whose size and composite checksum the
server itself confirmed (every part is sent with its CRC32 and refused by the server on a
mismatch; the completed object's composite checksum and size are read back and compared), or it
raises SnapshotError after aborting the multipart upload, so nothing is left open. The
manifest keeps the whole object's SHA-256, which every restore checks end to end. Memory is
bounded by the part size times the parts in flight, whatever the size of the stream.

Integrity in transit is the checksums', not the signature's: every write carries a checksum the
server verifies (CRC32 parts and manifests, SHA-256 binary-log segments), and that header is
signed, so the payload itself is not hashed a second time for SigV4 over plain http (botocore
signs bodies there; over https it already skips that for an upload that carries a checksum,
as AWS reasons it).
Each SHA-256 pass over a snapshot is half a core-second per GiB stored, on a machine
where zstd wants every core; the server then verifies a CRC32, not a SHA-256, for each part.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import zlib
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, fields
from typing import IO, Any, Literal, cast

from botocore.exceptions import BotoCoreError, ClientError

from ..config import SnapshotSettings
from ..exceptions import SnapshotCorrupt, SnapshotError

log = logging.getLogger(__name__)

DATA = "data.xbstream.zst"
MANIFEST = "manifest.json"
MIN_PART = 8 << 20  # S3's minimum is 5 MiB; parts grow so 10,000 of them hold ~40 TiB
PARTS_IN_FLIGHT = 2
Progress = Callable[[int], None]  # bytes moved so far


@dataclass(frozen=True)
class Manifest:
    id: str
    node: str  # the node the snapshot was taken on
    role: str  # its role then (replica or primary)
    primary: str  # the primary at the time (whose binary logs the position refers to)
    gtid: str  # the GTID position the data is consistent with
    binlog_file: str  # the primary's binary log file then (for the rotation trigger)
    server_version: str
    started_at: float  # Unix time
    finished_at: float
    raw_bytes: int  # the xbstream before compression
    stored_bytes: int  # the object in the bucket
    sha256: str  # hex SHA-256 of the stored bytes
    # the server's composite checksum of the parts, "<b64>-<parts>": of their CRC32s since
    # 2026-12-07, of their SHA-256s before (informational: restores check `sha256`)
    s3_checksum: str
    compression: str = "zstd"
    format: int = 1
    galera_uuid: str = ""  # TOPOLOGY=galera: the cluster the data belongs to ("": replication)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        data = json.loads(text)
        names = {f.name for f in fields(cls)}
        missing = names - set(data) - {"compression", "format", "galera_uuid"}
        if missing:
            raise ValueError(f"missing {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Segment:
    """One archived piece of the binary log (archive.py): whole transactions `first`..`last`
    (GTIDs) written between `first_time` and `last_time` (Unix seconds), the `seq`th of the
    archive. `link` is the GTID of the transaction archived just before `first` (the previous
    segment's `last`): the chain a restore follows, whatever holes the sequence numbers have
    (Galera leaves some). It is "start" for the first segment of an empty archive and "gap"
    for the first after a recorded gap. Everything but its size and checksum is in its key, so
    a listing alone plans a restore."""

    seq: int
    first: str
    last: str
    first_time: int
    last_time: int
    link: str
    node: str
    size: int = 0
    key: str = ""

    def name(self) -> str:
        return (f"{self.seq:010d}_{self.first}_{self.last}_{self.first_time}_{self.last_time}_"
                f"{self.link}_{self.node}.binlog")

    @classmethod
    def from_key(cls, key: str, root: str, size: int) -> Segment | None:
        name = key[len(root):]
        if not name.endswith(".binlog"):
            return None
        parts = name[:-len(".binlog")].split("_", 6)
        try:
            return cls(int(parts[0]), parts[1], parts[2], int(parts[3]), int(parts[4]),
                       parts[5], parts[6], size, key)
        except (ValueError, IndexError):
            return None


@dataclass(frozen=True)
class StoredObject:
    size: int
    sha256: str
    s3_checksum: str


def _crc32(data: bytes) -> bytes:
    return zlib.crc32(data).to_bytes(4, "big")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _composite(crcs: list[bytes]) -> str:
    """S3's checksum of a multipart object uploaded with CRC32 parts (COMPOSITE): the CRC32
    of the parts' CRC32s, then the number of parts."""
    return f"{_b64(_crc32(b''.join(crcs)))}-{len(crcs)}"


class SnapshotStore:
    def __init__(self, cfg: SnapshotSettings, client: Any = None) -> None:
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.root = f"{cfg.prefix}/snapshots/"
        self.binlog_root = f"{cfg.prefix}/binlogs/"
        if client is None:
            # Imported here, by the first store (snapshots are on), not with the module:
            # boto3 and botocore's client machinery hold about 10 MiB in every process that
            # loads them, and every node imports this module.
            import boto3
            from botocore.config import Config
        self.client = client or boto3.client(
            "s3", endpoint_url=cfg.endpoint or None, region_name=cfg.region or None,
            aws_access_key_id=cfg.access_key or None,
            aws_secret_access_key=cfg.secret_key or None, verify=cfg.verify_tls,
            config=Config(s3={"addressing_style": cast(Literal["auto", "virtual", "path"],
                                                       cfg.addressing_style),
                              # every body goes with a checksum (module docstring)
                              "payload_signing_enabled": False},
                          connect_timeout=min(5, cfg.timeout),
                          read_timeout=cfg.timeout,
                          retries={"max_attempts": 3, "mode": "standard"}))

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.root}" + (f" at {self.cfg.endpoint}"
                                                    if self.cfg.endpoint else "")

    def key(self, snapshot_id: str, name: str) -> str:
        return f"{self.root}{snapshot_id}/{name}"

    def _fail(self, what: str, exc: Exception) -> SnapshotError:
        return SnapshotError(f"{what} ({self.where}): {exc}. Check S3_ENDPOINT, S3_BUCKET "
                             "and the credentials, and that the storage is reachable")

    # --- reading ---------------------------------------------------------------------------------

    def manifests(self) -> list[Manifest]:
        """Every complete snapshot, oldest first. Unreadable manifests are logged and left out."""
        out: list[Manifest] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.root)
            keys = [o["Key"] for p in pages for o in p.get("Contents", [])
                    if o["Key"].endswith("/" + MANIFEST)]
            for k in keys:
                body = self.client.get_object(Bucket=self.bucket, Key=k)["Body"].read()
                try:
                    out.append(Manifest.from_json(body))
                except (ValueError, TypeError) as exc:
                    log.warning("ignoring unreadable snapshot manifest %s: %s", k, exc)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucket" \
                    and self.cfg.create_bucket:
                self._create_bucket()
                return []
            raise self._fail("cannot list snapshots", exc) from exc
        except BotoCoreError as exc:
            raise self._fail("cannot list snapshots", exc) from exc
        return sorted(out, key=lambda m: m.id)

    def _create_bucket(self) -> None:
        """S3_CREATE_BUCKET: the bucket did not exist (a fresh bundled MinIO): create it. A
        node that loses the race to another finds it owned by the same credentials."""
        args: dict[str, Any] = {"Bucket": self.bucket}
        if self.cfg.region and self.cfg.region != "us-east-1" and not self.cfg.endpoint:
            args["CreateBucketConfiguration"] = {"LocationConstraint": self.cfg.region}
        try:
            self.client.create_bucket(**args)
            log.info("created the bucket %s (S3_CREATE_BUCKET)", self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in (
                    "BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._fail(f"cannot create the bucket {self.bucket}", exc) from exc
        except BotoCoreError as exc:
            raise self._fail(f"cannot create the bucket {self.bucket}", exc) from exc

    def manifest(self, snapshot_id: str) -> Manifest:
        try:
            body = self.client.get_object(Bucket=self.bucket,
                                          Key=self.key(snapshot_id, MANIFEST))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise SnapshotError(f"no snapshot {snapshot_id!r} in {self.where} (see "
                                    "`autopilot-mysql backup list`)") from exc
            raise self._fail(f"cannot read the manifest of {snapshot_id}", exc) from exc
        except BotoCoreError as exc:
            raise self._fail(f"cannot read the manifest of {snapshot_id}", exc) from exc
        try:
            return Manifest.from_json(body)
        except (ValueError, TypeError) as exc:
            raise SnapshotError(f"the manifest of snapshot {snapshot_id} is unreadable: {exc}; "
                                "choose another snapshot") from exc

    def download(self, m: Manifest, sink: IO[bytes], progress: Progress | None = None,
                 chunk: int = 1 << 20) -> None:
        """Stream the data object into `sink`, checking its size and SHA-256 against the
        manifest at the end (the caller must discard what it wrote if this raises). Raises
        SnapshotCorrupt when the object is missing or does not match: no retry can help. When
        the sink fails first (zstd refuses what it is given), the rest is still read and
        hashed, so a corrupt object is told apart from a local failure."""
        h = hashlib.sha256()
        n = 0
        sink_error: OSError | None = None
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(m.id, DATA))["Body"]
            while True:
                block = body.read(chunk)
                if not block:
                    break
                h.update(block)
                n += len(block)
                if sink_error is None:
                    try:
                        sink.write(block)
                    except OSError as exc:
                        sink_error = exc
                if progress:
                    progress(n)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise SnapshotCorrupt(
                    f"snapshot {m.id} is unusable: its data object {self.key(m.id, DATA)} is "
                    f"missing from {self.where} (deleted by hand or by a lifecycle rule)"
                ) from exc
            raise self._fail(f"download of snapshot {m.id} failed after {n} bytes", exc) from exc
        except BotoCoreError as exc:
            raise self._fail(f"download of snapshot {m.id} failed after {n} bytes", exc) from exc
        if n != m.stored_bytes or h.hexdigest() != m.sha256:
            raise SnapshotCorrupt(
                f"snapshot {m.id} is corrupt: got {n} bytes with SHA-256 {h.hexdigest()[:16]}.., "
                f"its manifest says {m.stored_bytes} bytes, {m.sha256[:16]}... It cannot be "
                "restored; choose an older snapshot (`autopilot-mysql backup list`) or take a "
                "new one")
        if sink_error is not None:
            raise SnapshotError(f"restore of snapshot {m.id} stopped: the extraction side "
                                f"failed ({sink_error}); the stored object itself is intact")

    # --- writing ---------------------------------------------------------------------------------

    def upload(self, snapshot_id: str, stream: IO[bytes], progress: Progress | None = None,
               should_stop: Callable[[], bool] = lambda: False) -> StoredObject:
        key = self.key(snapshot_id, DATA)
        try:
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ChecksumAlgorithm="CRC32")["UploadId"]
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("cannot start the snapshot upload", exc) from exc
        try:
            return self._upload_parts(key, upload_id, stream, progress, should_stop)
        except BaseException as exc:
            self.abort(key, upload_id)
            if isinstance(exc, SnapshotError):
                raise
            if isinstance(exc, (BotoCoreError, ClientError)):
                raise self._fail(f"upload of snapshot {snapshot_id} failed", exc) from exc
            raise

    def _upload_parts(self, key: str, upload_id: str, stream: IO[bytes],
                      progress: Progress | None, should_stop: Callable[[], bool]) -> StoredObject:
        whole = hashlib.sha256()
        size = 0
        crcs: list[bytes] = []
        done: list[dict[str, Any]] = []
        pending: set[Future[dict[str, Any]]] = set()
        with ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="s3-part") as pool:
            while True:
                part_size = MIN_PART * (1 + len(crcs) // 1000)
                data = _read_full(stream, part_size)
                if not data and crcs:
                    break
                if should_stop():
                    raise SnapshotError("snapshot upload cancelled")
                whole.update(data)
                size += len(data)
                crcs.append(_crc32(data))
                if len(pending) >= PARTS_IN_FLIGHT:  # bounded memory; a failed part raises
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    done += [f.result() for f in finished]
                pending.add(pool.submit(self._put_part, key, upload_id, len(crcs), data,
                                        crcs[-1]))
                if progress:
                    progress(size)
                if len(data) < part_size:
                    break
            done += [f.result() for f in pending]
        done.sort(key=lambda part: int(part["PartNumber"]))
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                              MultipartUpload={"Parts": done})  # type: ignore[typeddict-item]
        expected = _composite(crcs)
        head = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        stored = head.get("ChecksumCRC32") or ""
        if head["ContentLength"] != size or (stored and stored != expected):
            raise SnapshotError(f"the stored object {key} does not match what was sent "
                                f"({head['ContentLength']} bytes, checksum {stored}; sent "
                                f"{size} bytes, {expected}): not using it")
        if not stored:
            log.warning("the S3 server returned no CRC32 checksum for %s: verified by size "
                        "only (per-part checksums were still checked on upload)", key)
        return StoredObject(size=size, sha256=whole.hexdigest(), s3_checksum=stored or expected)

    def _put_part(self, key: str, upload_id: str, number: int, data: bytes,
                  crc: bytes) -> dict[str, Any]:
        r = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                    PartNumber=number, Body=data, ChecksumCRC32=_b64(crc))
        return {"PartNumber": number, "ETag": r["ETag"],
                "ChecksumCRC32": r.get("ChecksumCRC32") or _b64(crc)}

    def abort(self, key: str, upload_id: str) -> bool:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            log.info("aborted the multipart upload of %s", key)
            return True
        except (BotoCoreError, ClientError) as exc:
            log.warning("could not abort the multipart upload of %s (%s): the next snapshot "
                        "removes it", key, exc)
            return False

    def open_uploads(self) -> list[tuple[str, str]]:
        """(key, upload id) of every multipart upload still open under our prefix."""
        # Listed for the whole bucket and filtered here: MinIO answers a Prefix that is not a
        # whole object name with an empty list.
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket)
            uploads = [u for p in pages for u in p.get("Uploads", []) or []]
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("cannot list open uploads", exc) from exc
        return [(u["Key"], u["UploadId"]) for u in uploads if u["Key"].startswith(self.root)]

    def abort_open_uploads(self) -> int:
        """Only called while holding the cluster's snapshot lock: then no upload is ours."""
        return sum(self.abort(k, u) for k, u in self.open_uploads())

    def put_manifest(self, m: Manifest) -> None:
        try:
            body = m.to_json().encode()
            self.client.put_object(Bucket=self.bucket, Key=self.key(m.id, MANIFEST),
                                   Body=body, ContentType="application/json",
                                   ChecksumCRC32=_b64(_crc32(body)))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"cannot write the manifest of snapshot {m.id}", exc) from exc

    def delete(self, snapshot_id: str) -> None:
        """Manifest first: from then on nothing considers it a snapshot."""
        try:
            for name in (MANIFEST, DATA):
                self.client.delete_object(Bucket=self.bucket, Key=self.key(snapshot_id, name))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"cannot delete snapshot {snapshot_id}", exc) from exc

    def orphans(self) -> list[str]:
        """Snapshot ids with a data object but no manifest (a snapshot that died halfway)."""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.root)
            keys = {o["Key"] for p in pages for o in p.get("Contents", [])}
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("cannot list snapshots", exc) from exc
        ids = {k[len(self.root):].split("/", 1)[0] for k in keys}
        return sorted(i for i in ids if self.key(i, MANIFEST) not in keys)

    # --- the binary-log archive ------------------------------------------------------------------

    def put_segment(self, seg: Segment, blob: bytes) -> Segment:
        """Store one segment; the server checks its SHA-256 on the way in, and the digest is
        kept in the object's metadata for every later read."""
        key = self.binlog_root + seg.name()
        digest = hashlib.sha256(blob).digest()
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=blob,
                                   ChecksumSHA256=base64.b64encode(digest).decode(),
                                   Metadata={"sha256": digest.hex()})
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"cannot archive binary-log segment {seg.seq}", exc) from exc
        return Segment(**{**asdict(seg), "size": len(blob), "key": key})

    def segments(self) -> list[Segment]:
        """Every archived segment, in archive order."""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.binlog_root)
            out = [Segment.from_key(o["Key"], self.binlog_root, int(o.get("Size", 0)))
                   for p in pages for o in p.get("Contents", [])]
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("cannot list the binary-log archive", exc) from exc
        return sorted((x for x in out if x is not None), key=lambda x: (x.seq, x.key))

    def get_segment(self, seg: Segment) -> bytes:
        """A segment's bytes, checked against the SHA-256 recorded when it was stored
        (SnapshotCorrupt when missing or different)."""
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=seg.key)
            blob = r["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise SnapshotCorrupt(f"archived segment {seg.key} is missing") from exc
            raise self._fail(f"cannot read archived segment {seg.key}", exc) from exc
        except BotoCoreError as exc:
            raise self._fail(f"cannot read archived segment {seg.key}", exc) from exc
        want = (r.get("Metadata") or {}).get("sha256", "")
        have = hashlib.sha256(blob).hexdigest()
        if want != have:
            raise SnapshotCorrupt(f"archived segment {seg.key} is corrupt: {len(blob)} bytes "
                                  f"with SHA-256 {have[:16]}.., stored with "
                                  f"{want[:16] or '(none)'}..")
        return bytes(blob)

    def delete_segment(self, seg: Segment) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=seg.key)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"cannot delete archived segment {seg.key}", exc) from exc


def _read_full(stream: IO[bytes], n: int) -> bytes:
    """Read exactly n bytes unless the stream ends first (a pipe returns short reads)."""
    buf = bytearray()
    while len(buf) < n:
        block = stream.read(n - len(buf))
        if not block:
            break
        buf += block
    return bytes(buf)
