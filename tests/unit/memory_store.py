"""A Store held in a dict, for unit tests of what reads and writes run state (no I/O)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from hopper.errors import Conflict
from hopper.runstate.store import Log


class MemoryStore:
    location = "memory://"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def get(self, key: str) -> tuple[bytes, str] | None:
        data = self.objects.get(key)
        if data is None:
            return None
        return data, hashlib.md5(data, usedforsecurity=False).hexdigest()

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        found = self.get(key)
        if if_absent and found is not None:
            raise Conflict(key)
        if if_match is not None and (found is None or found[1] != if_match):
            raise Conflict(key)
        self.objects[key] = data
        return hashlib.md5(data, usedforsecurity=False).hexdigest()

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self.objects.pop(key, None)

    def keys(self, prefix: str = "") -> Iterator[str]:
        yield from sorted(key for key in self.objects if key.startswith(prefix))

    def lines(self, key: str) -> Iterator[bytes]:
        yield from self.objects.get(key, b"").splitlines(keepends=True)

    def put_file(self, key: str, path: Path) -> None:
        self.objects[key] = path.read_bytes()

    def log(self, key: str) -> Log:
        return _MemoryLog(self, key)

    def log_lines(self, key: str) -> Iterator[bytes]:
        for name in self.keys(key):
            if name == key + ".jsonl" or name.startswith(key + "/"):
                yield from (line for line in self.lines(name) if line.strip())

    def holder_gone(self, host: str, pid: int) -> bool:
        return False

    def exists(self) -> bool:
        return True


class _MemoryLog:
    def __init__(self, store: MemoryStore, key: str) -> None:
        self.store = store
        self.key = key + ".jsonl"

    def append(self, line: bytes) -> None:
        self.store.objects[self.key] = self.store.objects.get(self.key, b"") + line

    def put_after(self, key: str, data: bytes) -> None:
        self.store.put(key, data)

    def flush(self) -> None:
        pass

    def close(self) -> BaseException | None:
        return None
