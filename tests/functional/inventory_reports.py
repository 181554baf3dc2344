"""Synthetic S3 Inventory reports, written as S3 documents them: a dated folder under
DEST_PREFIX/SOURCE_BUCKET/CONFIG_ID/ holding manifest.json (sourceBucket, fileFormat,
fileSchema, files with their MD5), manifest.checksum (the MD5 of manifest.json, written last),
and gzipped CSV data files without a header row, keys URL-encoded; or Parquet files with the
columns S3 names (key, size, e_tag, ...), keys as they are."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

CSV_SCHEMA = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag"


@dataclass(frozen=True)
class Row:
    key: str
    size: int = 1
    etag: str = "d41d8cd98f00b204e9800998ecf8427e"
    last_modified: str = "2026-11-28T10:00:00.000Z"
    latest: bool = True
    delete_marker: bool = False
    version: str = ""


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def csv_file(bucket: str, rows: list[Row]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for r in rows:
        writer.writerow(
            [
                bucket,
                quote_plus(r.key, safe="/"),
                r.version,
                "true" if r.latest else "false",
                "true" if r.delete_marker else "false",
                "" if r.delete_marker else str(r.size),
                r.last_modified,
                "" if r.delete_marker else r.etag,
            ]
        )
    return gzip.compress(text.getvalue().encode("utf-8"), mtime=0)


def parquet_file(bucket: str, rows: list[Row], fmt: str = "Parquet") -> bytes:
    import pyarrow as pa
    import pyarrow.orc as orc
    import pyarrow.parquet as pq

    def moment(text: str) -> datetime:
        return datetime.fromisoformat(text).astimezone(UTC)

    table = pa.table(
        {
            "bucket": [bucket] * len(rows),
            "key": [r.key for r in rows],
            "version_id": pa.array([r.version or None for r in rows], pa.string()),
            "is_latest": [r.latest for r in rows],
            "is_delete_marker": [r.delete_marker for r in rows],
            "size": pa.array([None if r.delete_marker else r.size for r in rows], pa.int64()),
            "last_modified_date": pa.array(
                [moment(r.last_modified) for r in rows], pa.timestamp("ms", tz="UTC")
            ),
            "e_tag": pa.array([None if r.delete_marker else r.etag for r in rows], pa.string()),
        }
    )
    out = io.BytesIO()
    if fmt == "ORC":
        orc.write_table(table, out)
    else:
        pq.write_table(table, out)
    return out.getvalue()


def write_report(
    s3: Any,
    rows: list[Row],
    *,
    dest: str = "inventory-dest",
    prefix: str = "reports",
    source: str = "source-bucket",
    config: str = "daily",
    when: str = "2026-11-29T00-00Z",
    files: int = 2,
    fmt: str = "CSV",
    complete: bool = True,
    seed: int = 7,
) -> str:
    """Write a report of `rows`, shuffled across `files` data files; returns the folder URL
    (`s3://dest/prefix/source/config/`) that an inventory: source names."""
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    base = f"{prefix}/{source}/{config}/"
    folder = f"{base}{when}/"
    entries = []
    for n in range(files):
        part = shuffled[n::files]
        if fmt == "CSV":
            body, key = csv_file(source, part), f"{base}data/{when}-{n}.csv.gz"
        else:
            body, key = parquet_file(source, part, fmt), f"{base}data/{when}-{n}.{fmt.lower()}"
        s3.put_object(Bucket=dest, Key=key, Body=body)
        entries.append({"key": key, "size": len(body), "MD5checksum": md5(body)})
    created = datetime.strptime(when, "%Y-%m-%dT%H-%MZ").replace(tzinfo=UTC)
    manifest = json.dumps(
        {
            "sourceBucket": source,
            "destinationBucket": f"arn:aws:s3:::{dest}",
            "version": "2016-11-30",
            "creationTimestamp": str(int(created.timestamp() * 1000)),
            "fileFormat": fmt,
            "fileSchema": CSV_SCHEMA if fmt == "CSV" else "message s3.inventory { ... }",
            "files": entries,
        }
    ).encode()
    s3.put_object(Bucket=dest, Key=f"{folder}manifest.json", Body=manifest)
    if complete:
        s3.put_object(Bucket=dest, Key=f"{folder}manifest.checksum", Body=md5(manifest).encode())
    return f"s3://{dest}/{base}"
