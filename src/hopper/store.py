"""Where run state lives: an S3 prefix or a local folder, behind one small interface.

Both offer what the lease needs: create-if-absent and replace-if-unchanged. S3 does it with
conditional writes (`If-None-Match: *`, `If-Match: ETAG`); a folder with an exclusive create
and an atomic rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from hopper import aws
from hopper.errors import InvalidInput, error_code, is_missing_object, translate


class Conflict(Exception):
    """A conditional write lost: the object exists, or changed since it was read."""


class Store(Protocol):
    location: str

    def get(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and version tag, or None when it does not exist."""
        ...

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        """Write; with a condition, raise Conflict when it does not hold. Returns the new tag."""
        ...

    def delete(self, key: str, *, if_match: str | None = None) -> None: ...

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix`, sorted."""
        ...

    def lines(self, key: str) -> Iterator[bytes]:
        """The object's lines, streamed; nothing when it does not exist."""
        ...

    def put_file(self, key: str, path: Path) -> None: ...


class LocalStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.location = str(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise InvalidInput(f"state {str(root)!r} exists and is not a folder")

    def _path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        return data, hashlib.md5(data, usedforsecurity=False).hexdigest()

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if if_absent:
            # Write aside, then hard-link into place: the link fails if the name exists, and a
            # reader never sees the file before its content.
            temp = self._write_temp(path, data)
            try:
                os.link(temp, path)
            except FileExistsError:
                raise Conflict(key) from None
            finally:
                temp.unlink(missing_ok=True)
            return tag
        if if_match is not None:
            # Move the current version aside atomically: of two racing writers only one can.
            aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            try:
                path.rename(aside)
            except FileNotFoundError:
                raise Conflict(key) from None
            current = hashlib.md5(aside.read_bytes(), usedforsecurity=False).hexdigest()
            if current != if_match:
                with contextlib.suppress(OSError):
                    os.link(aside, path)
                aside.unlink(missing_ok=True)
                raise Conflict(key)
            aside.unlink(missing_ok=True)
            return self.put(key, data, if_absent=True)
        self._write_atomic(path, data)
        return tag

    def _write_temp(self, path: Path, data: bytes) -> Path:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return Path(temp)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        self._write_temp(path, data).replace(path)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        path = self._path(key)
        if if_match is not None:
            found = self.get(key)
            if found is None or found[1] != if_match:
                raise Conflict(key)
        path.unlink(missing_ok=True)

    def keys(self, prefix: str = "") -> Iterator[str]:
        base = self.root
        if not base.exists():
            return
        found = sorted(
            p.relative_to(base).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
        yield from (key for key in found if key.startswith(prefix))

    def lines(self, key: str) -> Iterator[bytes]:
        try:
            with self._path(key).open("rb") as stream:
                yield from stream
        except FileNotFoundError:
            return

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        with path.open("rb") as source, temp.open("wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
        temp.replace(target)

    def append_line(self, key: str, line: bytes) -> None:
        """Local ledgers append, and flush each line: a crash loses nothing written."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as out:
            out.write(line)
            out.flush()


class S3Store:
    def __init__(self, bucket: str, prefix: str, *, boto3_session: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.location = f"s3://{bucket}/{self.prefix}"
        self._session = boto3_session
        self._client: Any = None

    def _s3(self) -> Any:
        if self._client is None:
            self._client = aws.client(self._session or aws.make_session(), "s3")
        return self._client

    def _fail(self, exc: Exception, operation: str, key: str) -> Exception:
        return translate(
            exc, operation=operation, resource=f"s3://{self.bucket}/{self.prefix}{key}"
        )

    def get(self, key: str) -> tuple[bytes, str] | None:
        try:
            response = self._s3().get_object(Bucket=self.bucket, Key=self.prefix + key)
        except aws.boto_errors() as exc:
            if is_missing_object(exc):
                return None
            raise self._fail(exc, "GetObject", key) from None
        return response["Body"].read(), str(response["ETag"])

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        extra: dict[str, str] = {}
        if if_absent:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = if_match
        try:
            response = self._s3().put_object(
                Bucket=self.bucket, Key=self.prefix + key, Body=data, **extra
            )
        except aws.boto_errors() as exc:
            if error_code(exc) in {
                "PreconditionFailed",
                "412",
                "ConditionalRequestConflict",
                "409",
            }:
                raise Conflict(key) from None
            if if_match is not None and is_missing_object(exc):
                raise Conflict(key) from None
            raise self._fail(exc, "PutObject", key) from None
        return str(response["ETag"])

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        extra = {"IfMatch": if_match} if if_match is not None else {}
        try:
            self._s3().delete_object(Bucket=self.bucket, Key=self.prefix + key, **extra)
        except aws.boto_errors() as exc:
            if error_code(exc) in {"PreconditionFailed", "412"}:
                raise Conflict(key) from None
            if is_missing_object(exc):
                return
            raise self._fail(exc, "DeleteObject", key) from None

    def keys(self, prefix: str = "") -> Iterator[str]:
        paginator = self._s3().get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for entry in page.get("Contents", []):
                    yield str(entry["Key"])[len(self.prefix) :]
        except aws.boto_errors() as exc:
            raise self._fail(exc, "ListObjectsV2", prefix) from None

    def lines(self, key: str) -> Iterator[bytes]:
        try:
            response = self._s3().get_object(Bucket=self.bucket, Key=self.prefix + key)
        except aws.boto_errors() as exc:
            if is_missing_object(exc):
                return
            raise self._fail(exc, "GetObject", key) from None
        yield from response["Body"].iter_lines(keepends=True)

    def put_file(self, key: str, path: Path) -> None:
        try:
            with path.open("rb") as body:
                self._s3().put_object(Bucket=self.bucket, Key=self.prefix + key, Body=body)
        except aws.boto_errors() as exc:
            raise self._fail(exc, "PutObject", key) from None


def open_store(location: str, *, boto3_session: Any = None) -> LocalStore | S3Store:
    """`s3://BUCKET/PREFIX` or a local folder (created when first written)."""
    location = location.strip()
    if not location:
        raise InvalidInput("--state is empty: give s3://BUCKET/PREFIX or a folder")
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://") :].partition("/")
        from hopper.sources import parse_source

        parse_source(f"s3://{bucket}")  # validates the bucket name
        return S3Store(bucket, prefix, boto3_session=boto3_session)
    if "://" in location and not location.startswith("file://"):
        raise InvalidInput(f"--state {location!r}: use s3://BUCKET/PREFIX or a local folder")
    return LocalStore(location.removeprefix("file://"))
