"""Where run state lives: an S3 prefix or a local folder, behind one small interface.

Both offer what the lease needs: create-if-absent and replace-if-unchanged. S3 does it with
conditional writes (`If-None-Match: *`, `If-Match: ETAG`); a folder with an exclusive create
and an atomic rename. What differs beyond that is a method of each store: how a log of lines
is written (`log`), and whether a lease's holder is known to be gone (`holder_gone`).

This module knows no layout: the keys are hopper.runstate.record's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from hopper import aws
from hopper.errors import (
    Conflict,
    InvalidInput,
    aws_errors,
    boto_errors,
    error_code,
    is_missing_object,
)

log = logging.getLogger(__name__)


class Log(Protocol):
    """A log of lines at one key, written in order, and the puts that must follow them."""

    def append(self, line: bytes) -> None:
        """Add one line (ending in a newline). Never waits on the network."""
        ...

    def put_after(self, key: str, data: bytes) -> None:
        """Put `key` once every line appended so far is written: a checkpoint never claims
        more than the log shows. A newer put of the same key replaces one not yet made."""
        ...

    def flush(self) -> None:
        """Wait until everything appended and put so far is written."""
        ...

    def close(self) -> BaseException | None:
        """Write what is left and stop; the first error a write met, if one did."""
        ...


class Store(Protocol):
    # The state location, as a person reads it: s3://BUCKET/PREFIX/ or a folder's real path.
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

    def log(self, key: str) -> Log:
        """Open the log at `key` for appending; a log already there is added to."""
        ...

    def log_lines(self, key: str) -> Iterator[bytes]:
        """Every line of the log at `key`, in the order written."""
        ...

    def holder_gone(self, host: str, pid: int) -> bool:
        """True when the process `pid` on `host` that holds a lease here is known to be gone,
        so the lease need not wait out its expiry."""
        ...

    def exists(self) -> bool:
        """Whether the location is there to read (a folder is made by the first run; an S3
        prefix always is, and a missing bucket speaks on the first call)."""
        ...


def _log_lines(store: Store, key: str) -> Iterator[bytes]:
    """A log is one file, `KEY.jsonl`, or parts `KEY/NNNNNN.jsonl` (S3 cannot append);
    either store reads both, so state copied between them reads the same."""
    for name in store.keys(key):
        if name == key + ".jsonl" or name.startswith(key + "/"):
            for raw in store.lines(name):
                if raw.strip():
                    yield raw


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

    def log(self, key: str) -> Log:
        return _FileLog(self, key)

    def log_lines(self, key: str) -> Iterator[bytes]:
        return _log_lines(self, key)

    def holder_gone(self, host: str, pid: int) -> bool:
        """A holder on this host whose process has ended."""
        return host == socket.gethostname() and not _alive(pid)

    def exists(self) -> bool:
        return self.root.is_dir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _FileLog:
    """Appends each line to `KEY.jsonl` at once, and flushes it, and makes each put that
    follows (a checkpoint) at once too: a killed run loses no line and no checkpoint. Neither
    is synced to the disk: that would cost a local run of short tasks more than its work, and
    guards against a power loss, which a resumed run survives anyway by sending again what
    the lost checkpoint had passed."""

    def __init__(self, store: LocalStore, key: str) -> None:
        self._store = store
        self._path = store._path(key + ".jsonl")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._out = self._path.open("ab")

    def append(self, line: bytes) -> None:
        self._out.write(line)
        self._out.flush()

    def put_after(self, key: str, data: bytes) -> None:
        path = self._store._path(key)
        temp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}")
        temp.write_bytes(data)
        temp.replace(path)

    def flush(self) -> None:
        pass

    def close(self) -> BaseException | None:
        self._out.close()
        return None


class S3Store:
    def __init__(self, bucket: str, prefix: str, *, session: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.location = f"s3://{bucket}/{self.prefix}"
        self._session = session
        self._client: Any = None

    def _s3(self) -> Any:
        if self._client is None:
            self._client = aws.client(self._session or aws.make_session(), "s3")
        return self._client

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def get(self, key: str) -> tuple[bytes, str] | None:
        with aws_errors("GetObject", self._where(key)):
            try:
                response = self._s3().get_object(Bucket=self.bucket, Key=self.prefix + key)
            except boto_errors() as exc:
                if is_missing_object(exc):
                    return None
                raise
            return response["Body"].read(), str(response["ETag"])

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        extra: dict[str, str] = {}
        if if_absent:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = if_match
        with aws_errors("PutObject", self._where(key)):
            try:
                response = self._s3().put_object(
                    Bucket=self.bucket, Key=self.prefix + key, Body=data, **extra
                )
            except boto_errors() as exc:
                if error_code(exc) in _LOST_CONDITION:
                    raise Conflict(key) from exc
                if if_match is not None and is_missing_object(exc):
                    raise Conflict(key) from exc
                raise
            return str(response["ETag"])

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        extra = {"IfMatch": if_match} if if_match is not None else {}
        with aws_errors("DeleteObject", self._where(key)):
            try:
                self._s3().delete_object(Bucket=self.bucket, Key=self.prefix + key, **extra)
            except boto_errors() as exc:
                if error_code(exc) in {"PreconditionFailed", "412"}:
                    raise Conflict(key) from exc
                if not is_missing_object(exc):
                    raise

    def keys(self, prefix: str = "") -> Iterator[str]:
        paginator = self._s3().get_paginator("list_objects_v2")
        with aws_errors("ListObjectsV2", self._where(prefix)):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for entry in page.get("Contents", []):
                    yield str(entry["Key"])[len(self.prefix) :]

    def lines(self, key: str) -> Iterator[bytes]:
        with aws_errors("GetObject", self._where(key)):
            try:
                response = self._s3().get_object(Bucket=self.bucket, Key=self.prefix + key)
            except boto_errors() as exc:
                if is_missing_object(exc):
                    return
                raise
            yield from response["Body"].iter_lines(keepends=True)

    def put_file(self, key: str, path: Path) -> None:
        with aws_errors("PutObject", self._where(key)), path.open("rb") as body:
            self._s3().put_object(Bucket=self.bucket, Key=self.prefix + key, Body=body)

    def log(self, key: str) -> Log:
        return _PartLog(self, key)

    def log_lines(self, key: str) -> Iterator[bytes]:
        return _log_lines(self, key)

    def holder_gone(self, host: str, pid: int) -> bool:
        """Never known: the holder may run anywhere; its lease expires instead."""
        return False

    def exists(self) -> bool:
        return True


# What S3 answers when a conditional write's condition does not hold.
_LOST_CONDITION = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


class _PartLog:
    """S3 cannot append: a writer thread puts what has accumulated since its last put as the
    next part object, `KEY/NNNNNN.jsonl`, then the newest of each put that follows. The run
    never waits on S3, and a crash loses only what the writer had not yet put: about one round
    trip's worth of lines, and no put claims lines that were lost."""

    def __init__(self, store: S3Store, key: str) -> None:
        self._store = store
        self._key = key
        # A log added to (a resumed run) continues after the parts already there.
        self._part = sum(1 for _ in store.keys(key + "/"))
        self._cv = threading.Condition()
        self._lines: list[bytes] = []
        self._puts: dict[str, bytes] = {}
        self._busy = False
        self._closing = False
        self._error: BaseException | None = None
        self._writer = threading.Thread(target=self._write_loop, name="hopper-ledger", daemon=True)
        self._writer.start()

    def append(self, line: bytes) -> None:
        with self._cv:
            self._lines.append(line)
            self._cv.notify_all()

    def put_after(self, key: str, data: bytes) -> None:
        with self._cv:
            self._puts[key] = data
            self._cv.notify_all()

    def _write_loop(self) -> None:
        while True:
            with self._cv:
                while not (self._lines or self._puts or self._closing):
                    self._cv.wait()
                if not (self._lines or self._puts):
                    return
                lines, self._lines = self._lines, []
                puts, self._puts = self._puts, {}
                self._busy = True
            try:
                # The lines go first: a put never claims more than the log shows.
                if lines:
                    self._part += 1
                    self._store.put(f"{self._key}/{self._part:06d}.jsonl", b"".join(lines))
                for key, data in puts.items():
                    self._store.put(key, data)
            except BaseException as exc:  # noqa: BLE001 - reported when the log closes
                log.warning("could not write %s: %s", self._store._where(self._key), exc)
                self._error = exc
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def flush(self) -> None:
        with self._cv:
            while self._lines or self._puts or self._busy:
                self._cv.wait()

    def close(self) -> BaseException | None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._writer.join()
        return self._error


def open_store(location: str, *, session: Any = None) -> LocalStore | S3Store:
    """`s3://BUCKET/PREFIX` or a local folder (created when first written)."""
    location = location.strip()
    if not location:
        raise InvalidInput("--state is empty: give s3://BUCKET/PREFIX or a folder")
    if location.startswith("s3://"):
        bucket, prefix = aws.split_s3_url(location, what="--state")
        return S3Store(bucket, prefix, session=session)
    if "://" in location and not location.startswith("file://"):
        raise InvalidInput(f"--state {location!r}: use s3://BUCKET/PREFIX or a local folder")
    return LocalStore(location.removeprefix("file://"))
