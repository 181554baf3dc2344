"""Single flight: one run per state location, held by a lease that the run keeps renewing.

The lease is one object, `lease.json`: who holds it (host, pid, run id) and until when. It is
created only if absent, renewed and taken over only if unchanged since it was read (S3
conditional writes; an exclusive create and an atomic rename in a folder). A lease past its
expiry is taken over; in a folder, so is one whose process is gone from this host.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from hopper.errors import Conflict, LeaseHeld
from hopper.runstate.record import LEASE_KEY
from hopper.runstate.store import Store

log = logging.getLogger(__name__)

# Seconds a lease lasts without renewal: how long a crashed holder blocks the next run.
DEFAULT_TTL = float(os.environ.get("HOPPER_LEASE_TTL") or 60)


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    run_id: str
    expires: float

    def describe(self) -> str:
        left = self.expires - time.time()
        return f"run {self.run_id} (pid {self.pid} on {self.host}, lease expires in {left:.0f}s)"


class Lease:
    def __init__(self, store: Store, run_id: str, *, ttl: float = DEFAULT_TTL) -> None:
        self.store = store
        self.run_id = run_id
        self.ttl = ttl
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._tag: str | None = None
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps(
            {
                "host": self.host,
                "pid": self.pid,
                "run_id": self.run_id,
                "expires": time.time() + self.ttl,
            }
        ).encode()

    def holder(self) -> tuple[Holder, str] | None:
        found = self.store.get(LEASE_KEY)
        if found is None:
            return None
        data, tag = found
        try:
            raw = json.loads(data)
            return Holder(
                str(raw["host"]), int(raw["pid"]), str(raw["run_id"]), float(raw["expires"])
            ), tag
        except (ValueError, KeyError, TypeError):
            # Unreadable: treat as expired so it cannot block every run forever.
            return Holder("?", 0, "?", 0.0), tag

    def _stale(self, holder: Holder) -> bool:
        if holder.expires < time.time():
            return True
        # A holder known to be gone (a folder's, whose process died on this host) need not
        # wait out its expiry.
        return self.store.holder_gone(holder.host, holder.pid)

    def try_acquire(self) -> Holder | None:
        """Take the lease; return None on success, or the holder that has it."""
        try:
            self._tag = self.store.put(LEASE_KEY, self._body(), if_absent=True)
            return None
        except Conflict:
            pass
        current = self.holder()
        if current is None:
            return self.try_acquire()
        holder, tag = current
        if not self._stale(holder):
            return holder
        try:
            self._tag = self.store.put(LEASE_KEY, self._body(), if_match=tag)
        except Conflict:
            again = self.holder()
            return again[0] if again else holder
        log.warning("took over the lease of %s", holder.describe())
        return None

    def acquire(
        self, *, wait: bool = False, poll: float = 2.0, timeout: float | None = None
    ) -> None:
        started = time.monotonic()
        while True:
            holder = self.try_acquire()
            if holder is None:
                self._start_renewing()
                return
            if not wait or (timeout is not None and time.monotonic() - started > timeout):
                raise LeaseHeld(
                    f"state {self.store.location} is held by {holder.describe()}",
                    hint="pass --wait to wait for it",
                )
            time.sleep(poll)

    def _start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="hopper-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self._tag = self.store.put(LEASE_KEY, self._body(), if_match=self._tag)
            except Conflict:
                log.error("lost the lease on %s", self.store.location)  # noqa: TRY400
                self._lost.set()
                return
            except Exception:  # a failed renewal is retried at the next tick
                log.warning("could not renew the lease on %s", self.store.location, exc_info=True)

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._tag is not None and not self.lost:
            try:
                self.store.delete(LEASE_KEY, if_match=self._tag)
            except Conflict:
                log.warning("the lease on %s changed hands before release", self.store.location)
        self._tag = None

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_: Any) -> None:
        self.release()
