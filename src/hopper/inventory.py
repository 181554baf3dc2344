"""S3 Inventory reports as a source: the objects a report lists, in UTF-8 key order.

`inventory:s3://DEST_BUCKET/PREFIX/SOURCE_BUCKET/CONFIG_ID/` takes the newest complete report
of that configuration; a URL ending in `manifest.json` takes that report. `?prefix=KEYS/` after
either keeps the objects under that prefix only, as `s3://SOURCE_BUCKET/KEYS/` would (in
prefixes mode its sub-folders are the datasets). A report is complete
once its `manifest.checksum` exists: S3 writes it last, and it holds the MD5 of the manifest.

Past about 100M objects a listing is the wrong tool (hours of LIST calls); the report S3 writes
daily or weekly lists them for the price of a few GETs. Its data files are not documented as
sorted, and every cursor hopper keeps (resume, --start-after, prefixes mode, the incremental
merge) needs key order, so the rows go through an external merge sort: runs of SORT_RUN rows
sorted in memory and spilled to anonymous temporary files, then merged. Memory holds one run
and a block of each spilled run, whatever the report's size.

Each data file's bytes are checked against the manifest's MD5 as they stream; since the sort
reads every file before the first row comes out, a corrupt report fails before anything is
dispatched. CSV reports need only the standard library; Parquet and ORC need pyarrow
(`pip install 'hopper[inventory]'`).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import IO, Any

from hopper import aws
from hopper.errors import (
    Interrupted,
    InvalidInput,
    InventoryError,
    aws_errors,
    boto_errors,
    error_code,
)
from hopper.items import Item, Page, Skipped
from hopper.wire.listing import url_decoded, url_decoded_lines

log = logging.getLogger(__name__)

SCHEME = "inventory:"
PAGE_SIZE = 1000
# Rows sorted in memory before a run is spilled (about 90 MB of rows), and rows per pickled
# block of a spilled run: the merge holds one block of each run.
SORT_RUN = 150_000
SPILL_BLOCK = 1024
# Rows of a CSV file read and decoded together.
_BLOCK = 8192
_REPORT_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}Z/")
_FORMATS = ("CSV", "Parquet", "ORC")
# The columns hopper reads, by their names in a CSV fileSchema and in Parquet or ORC files.
_CSV_COLUMNS = {
    "key": "Key",
    "size": "Size",
    "etag": "ETag",
    "modified": "LastModifiedDate",
    "latest": "IsLatest",
    "delete_marker": "IsDeleteMarker",
}
_COLUMNAR = {
    "key": "key",
    "size": "size",
    "etag": "e_tag",
    "modified": "last_modified_date",
    "latest": "is_latest",
    "delete_marker": "is_delete_marker",
}
DELETE_MARKER = "a delete marker"
NOT_LATEST = "not the latest version"

# A row as it is sorted and spilled: key, size, etag, last modified (ISO text or datetime),
# and why it is skipped (None for an object to hand on).
Row = tuple[str, int | None, str | None, Any, str | None]


@dataclass(frozen=True)
class DataFile:
    key: str
    size: int
    md5: str


@dataclass(frozen=True)
class Report:
    """One report, as its manifest describes it."""

    bucket: str
    manifest_key: str
    source_bucket: str
    file_format: str
    schema: tuple[str, ...]
    files: tuple[DataFile, ...]
    created: datetime

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.manifest_key}"

    def age_hours(self, now: datetime | None = None) -> float:
        return round(((now or datetime.now(UTC)) - self.created).total_seconds() / 3600, 1)


def is_inventory(text: str) -> bool:
    return text.strip().startswith(SCHEME)


def parse_inventory_url(text: str) -> tuple[str, str, str]:
    """`inventory:s3://BUCKET/PREFIX/[?prefix=KEYS]` -> (bucket, key prefix ending in /, the
    source's key prefix), or with the (bucket, key) of a `manifest.json`. Syntax only."""
    rest, _, query = text.strip().removeprefix(SCHEME).partition("?")
    keys = ""
    if query:
        name, _, keys = query.partition("=")
        if name != "prefix" or not keys:
            raise InvalidInput(
                f"source {text!r}: after ? only prefix=KEY_PREFIX may follow (the objects "
                "under that prefix of the source bucket)"
            )
    if not rest.startswith("s3://"):
        raise InvalidInput(
            f"source {text!r}: use inventory:s3://DEST_BUCKET/PREFIX/SOURCE_BUCKET/CONFIG_ID/ "
            "or the URL of a report's manifest.json"
        )
    bucket, key = aws.split_s3_url(rest, what="inventory source")
    if key.endswith("manifest.json"):
        return bucket, key, keys
    if not key.strip("/"):
        raise InvalidInput(
            f"source {text!r} names no report: give the folder of an inventory configuration "
            "(PREFIX/SOURCE_BUCKET/CONFIG_ID/) or a manifest.json"
        )
    return bucket, key if key.endswith("/") else key + "/", keys


def find_report(s3: Any, bucket: str, key: str) -> Report:
    """The report `key` names: that manifest, or the newest complete one under the folder."""
    if key.endswith("manifest.json"):
        folder = key.rpartition("/")[0] + "/"
        checksum = _read_checksum(s3, bucket, folder)
        if checksum is None:
            raise InventoryError(
                f"inventory report s3://{bucket}/{folder} is incomplete: it has no "
                "manifest.checksum yet (S3 writes it last)"
            )
        return _read_manifest(s3, bucket, key, checksum)
    folders = sorted(_report_folders(s3, bucket, key), reverse=True)
    if not folders:
        raise InventoryError(
            f"no inventory report under s3://{bucket}/{key}: expected folders named "
            "YYYY-MM-DDTHH-MMZ/ holding manifest.json"
        )
    for folder in folders:
        checksum = _read_checksum(s3, bucket, folder)
        if checksum is not None:
            return _read_manifest(s3, bucket, folder + "manifest.json", checksum)
        log.info(
            "inventory report s3://%s/%s is not complete yet; trying an older one", bucket, folder
        )
    raise InventoryError(
        f"no complete inventory report under s3://{bucket}/{key}: none of its "
        f"{len(folders)} report(s) has a manifest.checksum yet"
    )


def _report_folders(s3: Any, bucket: str, prefix: str) -> Iterator[str]:
    with aws_errors("ListObjectsV2", f"inventory s3://{bucket}/{prefix}"):
        pages = s3.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            for entry in page.get("CommonPrefixes", []):
                folder = str(entry["Prefix"])
                if _REPORT_FOLDER.fullmatch(folder[len(prefix) :]):
                    yield folder


def _get(s3: Any, bucket: str, key: str) -> bytes | None:
    with aws_errors("GetObject", f"s3://{bucket}/{key}"):
        try:
            return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except boto_errors() as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise


def _read_checksum(s3: Any, bucket: str, folder: str) -> str | None:
    body = _get(s3, bucket, folder + "manifest.checksum")
    return None if body is None else body.decode("ascii", "replace").strip().lower()


def _read_manifest(s3: Any, bucket: str, key: str, checksum: str) -> Report:
    url = f"s3://{bucket}/{key}"
    body = _get(s3, bucket, key)
    if body is None:
        raise InventoryError(f"inventory report {url} does not exist")
    if hashlib.md5(body, usedforsecurity=False).hexdigest() != checksum:
        raise InventoryError(
            f"inventory manifest {url} does not match its manifest.checksum: "
            "it was changed or cut short"
        )
    try:
        manifest = json.loads(body)
        file_format = str(manifest["fileFormat"])
        files = tuple(
            DataFile(str(f["key"]), int(f.get("size", 0)), str(f["MD5checksum"]).lower())
            for f in manifest["files"]
        )
        source_bucket = str(manifest["sourceBucket"])
        schema_text = str(manifest.get("fileSchema", ""))
        created = datetime.fromtimestamp(int(manifest["creationTimestamp"]) / 1000, UTC)
    except (ValueError, KeyError, TypeError) as exc:
        raise InventoryError(f"inventory manifest {url} is not one S3 writes: {exc!r}") from exc
    if file_format not in _FORMATS:
        raise InventoryError(f"inventory manifest {url}: unknown fileFormat {file_format!r}")
    schema = tuple(c.strip() for c in schema_text.split(",")) if file_format == "CSV" else ()
    if file_format == "CSV" and "Key" not in schema:
        raise InventoryError(f"inventory manifest {url}: its fileSchema has no Key column")
    return Report(bucket, key, source_bucket, file_format, schema, files, created)


class _Hashing(io.RawIOBase):
    """A readable stream over an S3 body that computes the MD5 of every byte read."""

    def __init__(self, body: Any) -> None:
        self.body = body
        self.md5 = hashlib.md5(usedforsecurity=False)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.body.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.md5.update(data)
        return n

    def finish(self) -> str:
        """Read what is left (a reader may stop before the end) and return the digest."""
        while chunk := self.body.read(1 << 20):
            self.md5.update(chunk)
        return self.md5.hexdigest()


def _mismatch(report: Report, file: DataFile, digest: str) -> InventoryError:
    return InventoryError(
        f"inventory data file s3://{report.bucket}/{file.key} does not match the MD5 in its "
        f"manifest ({digest} read, {file.md5} listed): the report is corrupt or was changed; "
        "nothing was dispatched"
    )


def _open(s3: Any, report: Report, file: DataFile) -> _Hashing:
    with aws_errors("GetObject", f"s3://{report.bucket}/{file.key}"):
        return _Hashing(s3.get_object(Bucket=report.bucket, Key=file.key)["Body"])


def _csv_rows(s3: Any, report: Report, file: DataFile) -> Iterator[Row]:
    import csv
    import gzip

    at = {
        name: report.schema.index(col) for name, col in _CSV_COLUMNS.items() if col in report.schema
    }
    key_at = at["key"]
    size_at, etag_at, modified_at = at.get("size"), at.get("etag"), at.get("modified")
    latest_at, marker_at = at.get("latest"), at.get("delete_marker")
    raw = _open(s3, report, file)
    buffered = io.BufferedReader(raw, 1 << 20)
    stream: Any = gzip.GzipFile(fileobj=buffered) if file.key.endswith(".gz") else buffered
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    with aws_errors("GetObject", f"s3://{report.bucket}/{file.key}"):
        try:
            reader = csv.reader(text)
            # Column by column, a block of rows at a time: a comprehension per column and
            # one URL-decoding call per block cost a fraction of a loop body per row.
            while chunk := list(itertools.islice(reader, _BLOCK)):
                block = [fields for fields in chunk if fields]
                keys = _decode_keys([fields[key_at] for fields in block])
                sizes: list[int | None] = (
                    [int(f[size_at]) if f[size_at] else None for f in block]
                    if size_at is not None
                    else [None] * len(block)
                )
                etags = (
                    [f[etag_at] or None for f in block]
                    if etag_at is not None
                    else [None] * len(block)
                )
                modified = (
                    [f[modified_at] or None for f in block]
                    if modified_at is not None
                    else [None] * len(block)
                )
                reasons = [
                    DELETE_MARKER
                    if marker_at is not None and f[marker_at] == "true"
                    else NOT_LATEST
                    if latest_at is not None and f[latest_at] == "false"
                    else None
                    for f in block
                ]
                yield from zip(keys, sizes, etags, modified, reasons, strict=True)
        except (OSError, EOFError, UnicodeDecodeError, csv.Error, IndexError, ValueError) as exc:
            # A cut-short or altered file usually breaks gzip or the CSV before the MD5 is known.
            digest = raw.finish()
            if digest != file.md5:
                raise _mismatch(report, file, digest) from exc
            raise InventoryError(
                f"inventory data file s3://{report.bucket}/{file.key} is not a CSV inventory "
                f"file: {exc}"
            ) from exc
    digest = raw.finish()
    if digest != file.md5:
        raise _mismatch(report, file, digest)


def _decode_keys(raw: list[str]) -> list[str]:
    """URL-decode a block of CSV keys with one call, as a listing's page is decoded."""
    keys = url_decoded_lines("\n".join(raw), len(raw))
    return [url_decoded(key) for key in raw] if keys is None else keys


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as exc:
        raise InvalidInput(
            "this inventory report is Parquet or ORC, which needs pyarrow: "
            "pip install 'hopper[inventory]'"
        ) from exc
    # Arrow's default allocator keeps freed memory for reuse; the rows leave Arrow at once
    # (to_pylist), so memory held back would only add to the sort's peak.
    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    return pyarrow


def _columnar_rows(s3: Any, report: Report, file: DataFile) -> Iterator[Row]:
    """Parquet and ORC files need random access: each goes to a temporary file first."""
    import tempfile

    _pyarrow()
    raw = _open(s3, report, file)
    with tempfile.TemporaryFile() as spool:
        with aws_errors("GetObject", f"s3://{report.bucket}/{file.key}"):
            while chunk := raw.read(1 << 20):
                spool.write(chunk)
        digest = raw.finish()
        if digest != file.md5:
            raise _mismatch(report, file, digest)
        spool.seek(0)
        yield from _table_rows(spool, report.file_format)


def _table_rows(spool: IO[bytes], file_format: str) -> Iterator[Row]:
    if file_format == "Parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(spool)
        names = set(parquet.schema_arrow.names)
        wanted = [c for c in _COLUMNAR.values() if c in names]
        batches: Iterable[Any] = parquet.iter_batches(batch_size=16_384, columns=wanted)
    else:
        import pyarrow.orc as orc

        table = orc.ORCFile(spool)
        names = set(table.schema.names)
        wanted = [c for c in _COLUMNAR.values() if c in names]
        batches = (table.read_stripe(i, columns=wanted) for i in range(table.nstripes))
    if "key" not in names:
        raise InventoryError(f"inventory {file_format} file has no key column")
    for batch in batches:
        columns = {name: batch.column(name).to_pylist() for name in wanted}
        n = batch.num_rows
        none = [None] * n
        keys = columns["key"]
        sizes = columns.get("size", none)
        etags = columns.get("e_tag", none)
        modified = columns.get("last_modified_date", none)
        latest = columns.get("is_latest", none)
        markers = columns.get("is_delete_marker", none)
        for i in range(n):
            reason = DELETE_MARKER if markers[i] else NOT_LATEST if latest[i] is False else None
            yield (keys[i], sizes[i], etags[i] or None, modified[i], reason)


def read_rows(s3: Any, report: Report) -> Iterator[Row]:
    """Every row of every data file, in the files' own order."""
    read = _csv_rows if report.file_format == "CSV" else _columnar_rows
    for file in report.files:
        yield from read(s3, report, file)


def sort_rows(rows: Iterable[Row], *, run: int = SORT_RUN) -> Iterator[Row]:
    """`rows` in key order, holding at most `run` rows (and a block of each spilled run)."""
    import heapq

    by_key = itemgetter(0)
    chunk: list[Row] = []
    spilled: list[IO[bytes]] = []
    try:
        for row in rows:
            chunk.append(row)
            if len(chunk) >= run:
                chunk.sort(key=by_key)
                spilled.append(_spill(chunk))
                chunk = []
        chunk.sort(key=by_key)
        if not spilled:
            yield from chunk
            return
        if chunk:
            spilled.append(_spill(chunk))
            chunk = []
        yield from heapq.merge(*(_unspill(f) for f in spilled), key=by_key)
    finally:
        for f in spilled:
            f.close()


def _spill(rows: list[Row]) -> IO[bytes]:
    import pickle
    import tempfile

    # Anonymous: the files vanish when closed, or when the process ends however it ends.
    f = tempfile.TemporaryFile()  # noqa: SIM115 - closed by sort_rows, after the merge
    for start in range(0, len(rows), SPILL_BLOCK):
        pickle.dump(rows[start : start + SPILL_BLOCK], f, protocol=pickle.HIGHEST_PROTOCOL)
    f.seek(0)
    return f


def _unspill(f: IO[bytes]) -> Iterator[Row]:
    import pickle

    while True:
        try:
            block: list[Row] = pickle.load(f)  # noqa: S301 - our own temporary file
        except EOFError:
            return
        yield from block


_UNSEEN: Any = object()


def _modified(value: Any) -> datetime | None:
    """CSV holds ISO text (`2026-11-30T09:00:00.000Z`); pyarrow gives datetimes."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class InventorySource:
    """The objects (or, in prefixes mode, the first-level prefixes) an inventory report lists,
    in UTF-8 key order, for the report's source bucket."""

    def __init__(
        self,
        text: str,
        *,
        mode: str = "objects",
        s3_client: Any = None,
        session: Any = None,
    ) -> None:
        self.text = text.strip()
        bucket, key, prefix = parse_inventory_url(self.text)
        self.location = (bucket, key)
        self.mode = mode
        # In prefixes mode the prefix names a folder: its sub-folders are the datasets.
        if mode == "prefixes" and prefix and not prefix.endswith("/"):
            prefix += "/"
        self.prefix = prefix
        self._client = s3_client
        self._session = session
        self._report: Report | None = None
        self.rows_read = 0
        self.rows_current = 0
        # The run's Ctrl-C: reading and sorting a large report takes minutes before the first
        # item, so the read itself stops when this is set.
        self.stop: threading.Event | None = None

    @property
    def report(self) -> Report:
        if self._report is None:
            self._report = find_report(self._s3(), *self.location)
        return self._report

    # Both come from the manifest, read on first use.
    @property
    def bucket(self) -> str | None:
        return self.report.source_bucket

    @property
    def key_root(self) -> str:
        return f"s3://{self.report.source_bucket}/"

    def describe(self) -> str:
        if self._report is not None:
            keys = f"?prefix={self.prefix}" if self.prefix else ""
            return f"{SCHEME}{self._report.url}{keys}"
        return self.text

    def _s3(self) -> Any:
        if self._client is None:
            self._client = aws.client(self._session or aws.make_session(), "s3")
        return self._client

    def pages(self, start_after: str | None = None) -> Iterator[Page]:
        report = self.report
        self.rows_read = 0

        def counted() -> Iterator[Row]:
            prefix, stop = self.prefix, self.stop
            for row in read_rows(self._s3(), report):
                if stop is not None and self.rows_read % _BLOCK == 0 and stop.is_set():
                    raise Interrupted(
                        f"stopped while reading the inventory report ({self.rows_read} rows "
                        "read); nothing was dispatched"
                    )
                if prefix and not row[0].startswith(prefix):
                    continue
                self.rows_read += 1
                if row[4] is None:
                    self.rows_current += 1
                yield row

        rows = sort_rows(counted())
        if self.mode == "prefixes":
            yield from _prefix_pages(rows, start_after, len(self.prefix))
        else:
            yield from _object_pages(rows, start_after)


def _object_pages(rows: Iterator[Row], start_after: str | None) -> Iterator[Page]:
    items: list[Item] = []
    skipped: list[Skipped] = []
    # Times repeat within a page (objects written together): parse each once per page.
    moments: dict[Any, datetime | None] = {}
    for key, size, etag, modified, reason in rows:
        if start_after is not None and key <= start_after:
            continue
        if reason is not None:
            skipped.append(Skipped(key, reason))
            continue
        moment = moments.get(modified, _UNSEEN)
        if moment is _UNSEEN:
            moment = moments[modified] = _modified(modified)
        items.append(Item(key, size, etag, moment))
        if len(items) >= PAGE_SIZE:
            yield Page(items=tuple(items), skipped=tuple(skipped))
            items, skipped, moments = [], [], {}
    if items or skipped:
        yield Page(items=tuple(items), skipped=tuple(skipped))


def _prefix_pages(rows: Iterator[Row], start_after: str | None, skip: int) -> Iterator[Page]:
    """The prefixes one level below the source's own (its first `skip` characters) that
    hold at least one current object, as a listing with the delimiter `/` gives them. Keys
    are sorted, so each prefix's keys come together."""
    items: list[Item] = []
    skipped: list[Skipped] = []
    last: str | None = None
    for key, _, _, _, reason in rows:
        end = key.find("/", skip)
        if end < 0:
            continue  # an object beside the datasets, not in one
        prefix = key[: end + 1]
        if start_after is not None and prefix <= start_after:
            continue
        if reason is not None:
            skipped.append(Skipped(key, reason))
            continue
        if prefix == last:
            continue
        last = prefix
        items.append(Item(key=prefix))
        if len(items) >= PAGE_SIZE:
            yield Page(items=tuple(items), skipped=tuple(skipped))
            items, skipped = [], []
    if items or skipped:
        yield Page(items=tuple(items), skipped=tuple(skipped))
