"""Reading, sorting and planning an S3 Inventory report: rows/s and peak memory.

    .venv/bin/python benchmarks/bench_inventory.py [--rows 10000000] [--format CSV|Parquet]

A synthetic report (the documented layout: manifest.json, manifest.checksum, gzipped CSV data
files without a header, keys URL-encoded and spread over the files in no order) is written to
a temporary folder, which benchmarks/stubs/aws_stub.js serves as S3 GetObject. A child process
runs `hopper plan inventory:s3://…/manifest.json` and reports its peak resident set; the
baseline, in the same run, is the standard library alone reading the same files (gzip and csv,
no sort, no plan): the floor of any CSV reader in Python.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

BUCKET = "bucket"
REPORT = "inventory/source-bucket/daily/2026-11-29T00-00Z/"
SCHEMA = "Bucket, Key, Size, LastModifiedDate, ETag, IsLatest, IsDeleteMarker"

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[2])
import suite
from click.testing import CliRunner
from hopper.cli import cli
started = time.perf_counter()
result = CliRunner().invoke(cli, ["plan", sys.argv[1], "--json"])
took = time.perf_counter() - started
assert result.exit_code == 0, result.output
plan = json.loads(result.stdout)
print(json.dumps({"seconds": took, "selected": plan["selected"], "rows": plan["inventory"]["rows"],
                  "peak_kb": suite.peak_kb()}))
"""


def md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_report(root: Path, rows: int, files: int, file_format: str = "CSV") -> str:
    """The report under root/BUCKET/; returns the inventory: URL of its manifest. Row i of
    file f is key number i * files + f in a permutation, so no file is in key order."""
    folder = root / BUCKET / REPORT
    data = root / BUCKET / "inventory/source-bucket/daily/data"
    folder.mkdir(parents=True)
    data.mkdir(parents=True)
    entries = []
    per_file = -(-rows // files)
    for f in range(files):
        numbers = [(i * 7_919_993 + 12_345) % rows for i in range(f, rows, files)]
        name = data / f"part-{f}.{'csv.gz' if file_format == 'CSV' else 'parquet'}"
        if file_format == "CSV":
            with gzip.open(name, "wb", compresslevel=1) as out:
                for start in range(0, len(numbers), 100_000):
                    out.write(
                        "".join(
                            f'"source-bucket","day%3D{n % 100:02d}/part+{n:09d}.csv","{n % 9973}",'
                            f'"2026-11-{1 + n % 28:02d}T03:04:05.000Z","{n:032x}","true","false"\n'
                            for n in numbers[start : start + 100_000]
                        ).encode()
                    )
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table(
                {
                    "bucket": pa.array(["source-bucket"] * len(numbers)),
                    "key": pa.array([f"day={n % 100:02d}/part {n:09d}.csv" for n in numbers]),
                    "size": pa.array([n % 9973 for n in numbers], pa.int64()),
                    "e_tag": pa.array([f"{n:032x}" for n in numbers]),
                    "is_latest": pa.array([True] * len(numbers)),
                    "is_delete_marker": pa.array([False] * len(numbers)),
                }
            )
            pq.write_table(table, name, row_group_size=per_file // 4 or 1)
        entries.append(
            {
                "key": str(name.relative_to(root / BUCKET)),
                "size": name.stat().st_size,
                "MD5checksum": md5(name),
            }
        )
    manifest = json.dumps(
        {
            "sourceBucket": "source-bucket",
            "destinationBucket": f"arn:aws:s3:::{BUCKET}",
            "version": "2016-11-30",
            "creationTimestamp": "1796000000000",
            "fileFormat": file_format,
            "fileSchema": SCHEMA if file_format == "CSV" else "message s3.inventory {}",
            "files": entries,
        }
    ).encode()
    (folder / "manifest.json").write_bytes(manifest)
    (folder / "manifest.checksum").write_text(hashlib.md5(manifest).hexdigest())
    return f"inventory:s3://{BUCKET}/{REPORT}manifest.json"


def stdlib_floor(root: Path) -> tuple[int, float]:
    """Rows/s of gzip + csv over the same files, nothing else."""
    import csv

    started = time.perf_counter()
    count = 0
    for path in sorted((root / BUCKET).rglob("*.csv.gz")):
        with gzip.open(path, "rt", newline="", encoding="utf-8") as text:
            for _ in csv.reader(text):
                count += 1
    return count, time.perf_counter() - started


def measure(rows: int, files: int = 8, file_format: str = "CSV") -> dict[str, Any]:
    import suite

    with tempfile.TemporaryDirectory(prefix="hopper-inventory-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        url = write_report(root, rows, files, file_format)
        written = time.perf_counter() - started
        floor = stdlib_floor(root) if file_format == "CSV" else None
        with suite.stub(keys=1, objects=str(root)):
            child = subprocess.run(
                [sys.executable, "-c", CHILD, url, str(HERE)],
                capture_output=True, text=True, env=dict(os.environ),
            )  # fmt: skip
        if child.returncode != 0:
            raise SystemExit(child.stderr[-2000:])
        result: dict[str, Any] = json.loads(child.stdout)
    assert result["rows"] == rows and result["selected"] == rows, result
    result["rows_per_s"] = rows / result["seconds"]
    result["written_s"] = written
    if floor is not None:
        result["floor_rows_per_s"] = floor[0] / floor[1]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--format", default="CSV", choices=["CSV", "Parquet"])
    args = parser.parse_args()
    result = measure(args.rows, args.files, args.format)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
