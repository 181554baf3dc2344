"""Sources list items page by page, in UTF-8 byte order, starting after a cursor.

S3 lists keys in UTF-8 binary order; the local source walks a folder in the same order, so a
cursor ("start after this key") means the same thing everywhere. A source never holds more than
one page (S3) or one folder's entries (local) in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hopper import aws
from hopper.errors import InvalidInput, aws_errors, boto_errors, error_code
from hopper.items import Item, Page, Skipped
from hopper.wire import transport
from hopper.wire.listing import FastLister, ListPage, page_from_response
from hopper.wire.partition import Partitioned

if TYPE_CHECKING:
    from hopper.inventory import InventorySource

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
# hopper's own files (state, deployed artifacts) live under this prefix of a bucket or folder,
# and a listing never returns them.
STATE_PREFIX = "_hopper/"
# Greater than any character a key can hold after a prefix: "after this prefix" in prefixes
# mode means after every key under it, or S3 would roll the rest of that prefix up again.
_AFTER_PREFIX = "\U0010ffff"
# A first page that waited at least this long (and twice its parsing time) is latency-bound:
# S3 takes 30-100 ms per page, a loopback endpoint a few. Measured in benchmarks/suite.py (P8).
_LATENCY_BOUND_SECONDS = 0.02
# S3's answers for "this bucket is in another region".
_REDIRECTS = frozenset(
    {
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
        "IllegalLocationConstraintException",
        "301",
    }
)


class Source(Protocol):
    """Anything that lists items in key order. `bucket` is set for S3 sources only (for an
    inventory report, the bucket it lists).

    `key_root` is what every key is relative to, ending in a separator: `s3://BUCKET/`, or a
    folder's real path and `/`.
    """

    mode: str

    @property
    def bucket(self) -> str | None: ...

    @property
    def key_root(self) -> str: ...

    def pages(self, start_after: str | None = None) -> Iterator[Page]: ...

    def describe(self) -> str: ...


def resume_point(cursor: str | None, mode: str) -> str | None:
    """What to pass as StartAfter to resume strictly after `cursor`."""
    if cursor is None:
        return None
    if mode == "prefixes" and cursor.endswith("/"):
        return cursor + _AFTER_PREFIX
    return cursor


class S3Source:
    """Every object (or common prefix) under s3://bucket/prefix, paginated."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        mode: str = "objects",
        s3_client: Any = None,
        session: Any = None,
        transport_name: str = "auto",
        parallelism: int = 16,
    ) -> None:
        self.bucket: str | None = bucket
        self.transport = transport_name
        self.parallelism = parallelism
        self.mode = mode
        # In prefixes mode the prefix names a folder: its sub-folders are the datasets.
        if mode == "prefixes" and prefix and not prefix.endswith("/"):
            prefix += "/"
        self.prefix = prefix
        self.key_root = f"s3://{bucket}/"
        self._client = s3_client
        self._session = session

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _s3(self) -> Any:
        if self._client is None:
            session = self._session or aws.make_session()
            self._client = aws.client(session, "s3")
        return self._client

    def pages(self, start_after: str | None = None) -> Iterator[Page]:
        begin = resume_point(start_after, self.mode)
        with aws_errors("ListObjectsV2", f"bucket {self.bucket}"):
            if transport.choose(self.transport) == "fast":
                yield from self._fast(begin)
            else:
                yield from self._paginated(begin)

    def _paginated(self, begin: str | None) -> Iterator[Page]:
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix,
            # Keys may hold characters XML 1.0 cannot carry; S3 URL-encodes them for us.
            "EncodingType": "url",
            "PaginationConfig": {"PageSize": PAGE_SIZE},
        }
        if self.mode == "prefixes":
            params["Delimiter"] = "/"
        if begin is not None:
            params["StartAfter"] = begin
        for response in self._s3().get_paginator("list_objects_v2").paginate(**params):
            yield Page(items=tuple(_after(page_from_response(response, self.mode), begin)))

    def _fast(self, begin: str | None) -> Iterator[Page]:
        lister = FastLister(self._s3(), str(self.bucket), self.prefix, self.mode)
        if not lister.open():
            yield from self._paginated(begin)
            return
        try:
            try:
                started, cpu = time.perf_counter(), time.thread_time()
                page = lister.page(start_after=begin)
                # Waiting on S3 (not parsing) is what parallel ranges hide. When the first
                # page came back quickly (a local endpoint, few cores), ranges in threads
                # would only contend for the interpreter: list one page at a time.
                cpu = time.thread_time() - cpu
                waiting = time.perf_counter() - started - cpu
            except boto_errors() as exc:
                if error_code(exc) not in _REDIRECTS:
                    raise
                # The bucket lives in another region: botocore's redirector knows the way.
                log.info("s3://%s answered %s; listing with boto3", self.bucket, error_code(exc))
                yield from self._paginated(begin)
                return
            yield Page(items=tuple(_after(page, begin)))
            if not page.truncated:
                return
            latency_bound = waiting >= _LATENCY_BOUND_SECONDS and waiting >= 2 * cpu
            if not latency_bound:
                log.info(
                    "s3://%s: the first page took %.1f ms of CPU and %.1f ms waiting; "
                    "listing one page at a time",
                    self.bucket,
                    cpu * 1000,
                    waiting * 1000,
                )
            if (
                latency_bound
                and self.mode == "objects"
                and self.parallelism > 1
                and page.last
                and page.items
            ):
                # A listing past its first page may be long: list ranges of it at once.
                ranges = Partitioned(
                    lambda after, until: _fetched(lister.page(start_after=after, until=until)),
                    after=page.last,
                    first_page=[item.key for item in page.items],
                    parallelism=self.parallelism,
                    # Where the keys have folders, each folder ends a range: folders are
                    # where key density changes, which the first page cannot predict.
                    cuts=[folder + _AFTER_PREFIX for folder in lister.folders(page.last)],
                )
                for items in ranges:
                    yield Page(items=tuple(items))
                return
            while page.truncated and page.token:
                page = lister.page(token=page.token)
                yield Page(items=tuple(_after(page, begin)))
        finally:
            lister.close()


def _after(page: ListPage, begin: str | None) -> list[Item]:
    """In prefixes mode S3 may roll the resume point's own prefix up again: drop it."""
    if begin is None or not page.items or page.items[0].key > begin:
        return page.items
    return [item for item in page.items if item.key > begin]


def _fetched(page: ListPage) -> tuple[list[Item], str | None, bool]:
    return page.items, page.last, page.truncated


class LocalSource:
    """Files (objects mode) or sub-folders (prefixes mode) of a folder, as relative POSIX keys.

    Never reads outside the folder: a symbolic link that resolves outside it is skipped and
    reported, and so is a link loop.
    """

    def __init__(self, root: str | os.PathLike[str], *, mode: str = "objects") -> None:
        path = Path(root).expanduser()
        if not path.exists():
            raise InvalidInput(f"folder {str(root)!r} does not exist")
        if not path.is_dir():
            raise InvalidInput(f"{str(root)!r} is not a folder")
        self.root = os.path.realpath(path)
        self.key_root = self.root.rstrip(os.sep) + os.sep
        self.bucket: str | None = None
        self.mode = mode

    def describe(self) -> str:
        return self.root

    def pages(self, start_after: str | None = None) -> Iterator[Page]:
        begin = resume_point(start_after, self.mode)
        items: list[Item] = []
        skipped: list[Skipped] = []
        for entry in self._walk(self.root, "", frozenset({self.root}), begin):
            if isinstance(entry, Skipped):
                skipped.append(entry)
                continue
            items.append(entry)
            if len(items) >= PAGE_SIZE:
                yield Page(items=tuple(items), skipped=tuple(skipped))
                items, skipped = [], []
        if items or skipped:
            yield Page(items=tuple(items), skipped=tuple(skipped))

    def _inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root + os.sep)

    def _walk(
        self, folder: str, rel: str, ancestors: frozenset[str], begin: str | None
    ) -> Iterator[Item | Skipped]:
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            yield Skipped(rel or ".", f"cannot read folder: {exc.strerror}")
            return
        children: list[tuple[bytes, str, str, os.stat_result, bool]] = []
        for entry in entries:
            key = rel + entry.name
            try:
                encoded = key.encode("utf-8")
            except UnicodeEncodeError:
                yield Skipped(_printable(key), "name is not valid UTF-8")
                continue
            real = entry.path
            try:
                # Most entries are plain files: their stat is all there is to resolve.
                info = None if entry.is_symlink() else entry.stat(follow_symlinks=False)
            except OSError:
                info = None
            if info is None:
                resolved = self._resolve(entry, key)
                if isinstance(resolved, Skipped):
                    yield resolved
                    continue
                real, info = resolved
            is_dir = stat.S_ISDIR(info.st_mode)
            if not is_dir and not stat.S_ISREG(info.st_mode):
                yield Skipped(key, "not a regular file")
                continue
            # A folder's keys all start with "name/", so it sorts as "name/" among its siblings.
            sort_key = encoded + b"/" if is_dir else encoded
            children.append((sort_key, key, real, info, is_dir))
        children.sort(key=lambda child: child[0])
        for _, key, real, info, is_dir in children:
            if is_dir:
                dir_key = key + "/"
                if real in ancestors:
                    yield Skipped(dir_key, "symbolic link loop")
                    continue
                if self.mode == "prefixes":
                    if begin is None or dir_key > begin:
                        yield Item(key=dir_key, last_modified=_mtime(info), path=real)
                    continue
                # Prune folders that sort wholly before the cursor.
                if begin is not None and dir_key < begin and not begin.startswith(dir_key):
                    continue
                yield from self._walk(real, dir_key, ancestors | {real}, begin)
            elif self.mode == "objects" and (begin is None or key > begin):
                yield Item(
                    key=key,
                    size=info.st_size,
                    # A version tag, as S3's ETag is: incremental runs compare it.
                    etag=f"{info.st_size:x}-{info.st_mtime_ns:x}",
                    last_modified=_mtime(info),
                    path=real,
                )

    def _resolve(self, entry: os.DirEntry[str], key: str) -> tuple[str, os.stat_result] | Skipped:
        try:
            if not entry.is_symlink():
                return entry.path, entry.stat(follow_symlinks=False)
            real = os.path.realpath(entry.path)
            if not self._inside(real):
                log.warning("skipped %s: symbolic link leads outside the folder", key)
                return Skipped(key, "symbolic link leads outside the folder")
            return real, Path(real).stat()
        except FileNotFoundError:
            return Skipped(key, "broken symbolic link")
        except OSError as exc:
            return Skipped(key, f"cannot stat: {exc.strerror}")


def _printable(key: str) -> str:
    return key.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _mtime(info: os.stat_result) -> datetime:
    return datetime.fromtimestamp(info.st_mtime, UTC)


def parse_source(
    text: str,
    *,
    mode: str = "objects",
    session: Any = None,
    s3_client: Any = None,
    transport_name: str = "auto",
    parallelism: int = 16,
) -> S3Source | LocalSource | InventorySource:
    """`s3://BUCKET[/PREFIX]`, `inventory:s3://…` (an S3 Inventory report), `file://PATH` or a
    folder path."""
    text = text.strip()
    if text.startswith("inventory:"):
        # Loaded only for an inventory source: the Lambda handler's cold start skips it.
        from hopper.inventory import InventorySource

        return InventorySource(text, mode=mode, s3_client=s3_client, session=session)
    if text.startswith("s3://"):
        bucket, prefix = aws.split_s3_url(text, what="source")
        return S3Source(
            bucket,
            prefix,
            mode=mode,
            s3_client=s3_client,
            session=session,
            transport_name=transport_name,
            parallelism=parallelism,
        )
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", text):
        raise InvalidInput(f"source {text!r}: use s3://BUCKET[/PREFIX] or a local folder")
    if not text:
        raise InvalidInput("source is empty: give s3://BUCKET[/PREFIX] or a folder")
    return LocalSource(text, mode=mode)


class Datasets:
    """Prefixes mode for incremental runs: each dataset with a fingerprint of its contents.

    A dataset's `etag` is a digest of the key, size and ETag of every object under it, so a
    change to any file inside it shows. The objects come from one more listing of the same
    source, objects mode, merged with the prefixes listing as both stream in key order:
    memory holds a page of each. `objects_listed` counts that extra listing (plan prices it).
    """

    def __init__(self, prefixes: Source, objects: Source) -> None:
        self.prefixes = prefixes
        self.objects = objects
        self.bucket = prefixes.bucket
        self.mode = prefixes.mode
        self.key_root = prefixes.key_root
        self.objects_listed = 0

    def describe(self) -> str:
        return self.prefixes.describe()

    def pages(self, start_after: str | None = None) -> Iterator[Page]:
        objects = self._objects(resume_point(start_after, "prefixes"))
        head = next(objects, None)
        for page in self.prefixes.pages(start_after):
            items = []
            for dataset in page.items:
                digest = hashlib.sha256()
                while head is not None and head.key < dataset.key:
                    head = next(objects, None)
                while head is not None and head.key.startswith(dataset.key):
                    digest.update(f"{head.key}\0{head.size}\0{head.etag}\0".encode())
                    head = next(objects, None)
                items.append(dataclasses.replace(dataset, etag=digest.hexdigest()[:32]))
            yield Page(items=tuple(items), skipped=page.skipped)

    def _objects(self, start_after: str | None) -> Iterator[Item]:
        for page in self.objects.pages(start_after):
            for item in page.items:
                self.objects_listed += 1
                yield item
