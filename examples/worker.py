"""An example hopper worker: summarise the CSV files of each dataset it is handed.

The same file runs locally (`--target examples/worker.py:handler`, items carry a `path`) and
deployed as a Lambda function (items are S3 keys under `bucket`). It needs only the standard
library, plus boto3 on Lambda, where the runtime provides it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") and not logging.getLogger().handlers:
    # Lambda's Python runtime gives the root logger a handler (at the function's log level);
    # an emulator may not, and then these lines would go nowhere.
    logging.basicConfig(level=logging.WARNING)
log.setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return one summary per dataset: files, rows, and per-column totals of numbers."""
    meta = event.get("hopper", {})
    # The run id in each line lets `hopper logs --worker --run RUN_ID` find them.
    log.info(
        "run %s batch %s attempt %s, %d item(s), %d ms left",
        meta.get("run_id"),
        meta.get("batch"),
        meta.get("attempt"),
        len(event.get("items", [])),
        context.get_remaining_time_in_millis(),
    )
    summaries = {}
    for item in event.get("items", []):
        key = item["key"]
        if "path" in item:
            files = _local_csv_files(Path(item["path"]))
        else:
            files = _s3_csv_files(event["bucket"], key)
        summaries[key] = summarise(files)
    # Markers say which datasets were processed, one object per invocation, for people and tests.
    marker = event.get("marker_prefix") or os.environ.get("MARKER_PREFIX")
    if marker and "bucket" in event:
        _write_markers(event["bucket"], marker, summaries, meta, context.aws_request_id)
    return {"datasets": summaries, "request_id": context.aws_request_id}


def summarise(files: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Summary of CSV texts given as (name, text) pairs."""
    names: list[str] = []
    rows = 0
    totals: dict[str, float] = {}
    for name, text in files:
        names.append(name)
        for row in csv.DictReader(io.StringIO(text)):
            rows += 1
            for column, value in row.items():
                number = _number(value)
                if number is not None:
                    totals[column] = round(totals.get(column, 0.0) + number, 6)
    return {"files": names, "rows": rows, "totals": totals}


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _local_csv_files(path: Path) -> Iterator[tuple[str, str]]:
    if path.is_file():
        candidates = [path] if path.suffix == ".csv" else []
    else:
        candidates = sorted(path.rglob("*.csv"))
    for file in candidates:
        yield file.name, file.read_text(encoding="utf-8")


def _s3_csv_files(bucket: str, key: str) -> Iterator[tuple[str, str]]:
    import boto3

    s3 = boto3.client("s3")
    keys: list[str]
    if key.endswith("/"):
        paginator = s3.get_paginator("list_objects_v2")
        keys = [
            entry["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=key)
            for entry in page.get("Contents", [])
            if entry["Key"].endswith(".csv")
        ]
    else:
        keys = [key] if key.endswith(".csv") else []
    for name in keys:
        body = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
        yield name.rsplit("/", 1)[-1], body.decode("utf-8")


def _write_markers(
    bucket: str, prefix: str, summaries: dict[str, Any], meta: dict[str, Any], request_id: str
) -> None:
    """A marker per dataset and invocation: a second delivery leaves a second marker."""
    import boto3

    s3 = boto3.client("s3")
    for key, summary in summaries.items():
        name = key.strip("/").replace("/", "_") or "root"
        body = json.dumps({"key": key, "summary": summary, "hopper": meta})
        s3.put_object(
            Bucket=bucket, Key=f"{prefix}{name}/{request_id}.json", Body=body.encode("utf-8")
        )
