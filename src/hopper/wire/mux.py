"""Many requests in flight from one thread, on non-blocking keep-alive connections.

At thousands of invokes a second, a thread per request in flight spends more CPU waking
threads and passing the GIL than on the requests themselves: 64 threads made one invoke cost
about twice the CPU of one thread. Here one thread waits on every socket at once (epoll or
kqueue, through `selectors`). Requests are signed, hooked (`before-send`) and answered as
`Channel.send` does them, and failures become the same botocore exceptions; only the waiting
differs.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from hopper.wire.transport import (
    IDLE_LIMIT,
    Channel,
    Reply,
    network_error,
    parse_reply,
    request_bytes,
    tls_context,
)

_CONNECTING, _HANDSHAKE, _WRITING, _READING, _IDLE = range(5)
# How often waiting requests are checked against their timeouts.
_SWEEP = 0.05


@dataclass(slots=True)
class _Request:
    token: int
    url: str
    data: bytes
    # Sent once more on a new connection already: never again.
    resent: bool = False


@dataclass(eq=False, slots=True)
class _Conn:
    sock: Any
    fd: int
    state: int
    deadline: float
    request: _Request | None = None
    mask: int = 0
    used: int = 0
    sent: int = 0
    idle_since: float = 0.0
    buffer: bytearray = field(default_factory=bytearray)


class Mux:
    """Sends requests through `channel`'s signer and hooks, up to `limit` connections at once.

    `start()` sends (or queues) one request; `wait()` returns the requests answered since,
    each with its Reply or the botocore exception its failure maps to. Never sends a request
    twice once it may have reached the server, as Channel does not.
    """

    def __init__(self, channel: Channel, limit: int, *, connect_timeout: float = 10.0) -> None:
        self._channel = channel
        self._limit = limit
        self._read_timeout = channel.read_timeout
        self._connect_timeout = connect_timeout
        self._selector = selectors.DefaultSelector()
        self._open: dict[int, _Conn] = {}
        self._idle: list[_Conn] = []
        self._done: list[tuple[int, Reply | Exception]] = []
        # Requests waiting for one of the `limit` connections to come free.
        self._queued: deque[_Request] = deque()
        self._origin: tuple[str, str, int] | None = None
        self._addresses: list[Any] = []
        self._turn = 0
        self._next_sweep = 0.0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r.fileno(), selectors.EVENT_READ, None)

    # ---------------------------------------------------------------------------- caller

    def start(
        self,
        token: int,
        operation: str,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        try:
            prepared, answered = self._channel.prepare(operation, method, url, headers, body)
        except Exception as exc:  # noqa: BLE001 - a hook's or the signer's; the caller's to classify
            self._done.append((token, exc))
            return
        if answered is not None:
            self._done.append((token, answered))
            return
        head, payload = request_bytes(prepared)
        self._send(_Request(token, prepared.url, head + payload))

    def wait(self, timeout: float) -> list[tuple[int, Reply | Exception]]:
        """What was answered, waiting up to `timeout` seconds for the first answer."""
        if not self._done:
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                else:
                    self._ready(key.data)
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP
            self._sweep(now)
        while self._queued and (self._idle or len(self._open) < self._limit):
            self._send(self._queued.popleft())
        done, self._done = self._done, []
        return done

    def wake(self) -> None:
        """Ends a wait() early; safe from any thread."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def close(self) -> None:
        for conn in list(self._open.values()):
            self._close(conn)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # ----------------------------------------------------------------------- connections

    def _send(self, request: _Request) -> None:
        conn = None if request.resent else self._reusable()
        if conn is None:
            if len(self._open) >= self._limit and not request.resent:
                self._queued.append(request)
                return
            try:
                conn = self._connect(request.url)
            except OSError as exc:
                self._done.append((request.token, network_error(exc, request.url, connecting=True)))
                return
        conn.request = request
        conn.sent = 0
        if conn.state == _IDLE:
            conn.state = _WRITING
            conn.deadline = time.monotonic() + self._read_timeout
            self._write(conn)

    def _reusable(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since <= IDLE_LIMIT:
                return conn
            self._close(conn)
        return None

    def _connect(self, url: str) -> _Conn:
        if self._origin is None:
            parts = urlsplit(url)
            https = parts.scheme == "https"
            host = parts.hostname or ""
            self._origin = (parts.scheme, host, parts.port or (443 if https else 80))
        _, host, port = self._origin
        if not self._addresses:
            self._addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        # Round-robin over the endpoint's addresses, as separate connections from a pool do.
        family, kind, proto, _, address = self._addresses[self._turn % len(self._addresses)]
        self._turn += 1
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(address)
        except OSError:
            sock.close()
            raise
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            self._addresses = []
            raise OSError(code, f"cannot connect to {host}:{port}: {errno.errorcode.get(code)}")
        conn = _Conn(sock, sock.fileno(), _CONNECTING, time.monotonic() + self._connect_timeout)
        self._open[conn.fd] = conn
        self._watch(conn, selectors.EVENT_WRITE)
        return conn

    def _watch(self, conn: _Conn, mask: int) -> None:
        if conn.mask == mask:
            return
        if conn.mask:
            self._selector.modify(conn.fd, mask, conn)
        else:
            self._selector.register(conn.fd, mask, conn)
        conn.mask = mask

    def _close(self, conn: _Conn) -> None:
        if self._open.pop(conn.fd, None) is None:
            return
        if conn.mask:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(conn.fd)
        with contextlib.suppress(OSError):
            conn.sock.close()

    # ---------------------------------------------------------------------------- events

    def _ready(self, conn: _Conn) -> None:
        try:
            if conn.state == _CONNECTING:
                self._connected(conn)
            elif conn.state == _HANDSHAKE:
                self._handshake(conn)
            elif conn.state == _WRITING:
                self._write(conn)
            elif conn.state == _READING:
                self._read(conn)
            else:
                # An idle connection readable: the server closed it (or sent what nobody
                # asked for). Either way it cannot carry a request.
                self._idle.remove(conn)
                self._close(conn)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._failed(conn, exc)

    def _connected(self, conn: _Conn) -> None:
        code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, f"connection failed: {errno.errorcode.get(code, code)}")
        assert self._origin is not None
        scheme, host, _ = self._origin
        if scheme == "https":
            conn.sock = tls_context().wrap_socket(
                conn.sock, server_hostname=host, do_handshake_on_connect=False
            )
            conn.state = _HANDSHAKE
            self._handshake(conn)
            return
        self._begin(conn)

    def _handshake(self, conn: _Conn) -> None:
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        self._begin(conn)

    def _begin(self, conn: _Conn) -> None:
        conn.state = _WRITING
        conn.deadline = time.monotonic() + self._read_timeout
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        assert conn.request is not None
        data = conn.request.data
        try:
            while conn.sent < len(data):
                conn.sent += conn.sock.send(memoryview(data)[conn.sent :])
        except (BlockingIOError, ssl.SSLWantWriteError):
            self._watch(conn, selectors.EVENT_WRITE)
            return
        except ssl.SSLWantReadError:
            self._watch(conn, selectors.EVENT_READ)
            return
        conn.state = _READING
        self._watch(conn, selectors.EVENT_READ)

    def _read(self, conn: _Conn) -> None:
        closed = False
        while True:
            try:
                chunk = conn.sock.recv(262144)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except ssl.SSLZeroReturnError:
                chunk = b""
            if not chunk:
                closed = True
            conn.buffer += chunk
            # Parsed after every read, so that a whole answer costs one recv, not a second
            # one that only says "nothing more".
            parsed = parse_reply(conn.buffer, closed)
            if parsed is not None:
                break
            if closed:
                self._lost(conn)
                return
        reply, keep, used = parsed
        request = conn.request
        assert request is not None
        self._done.append((request.token, reply))
        conn.request = None
        conn.used += 1
        if keep and used == len(conn.buffer):
            conn.buffer.clear()
            conn.state = _IDLE
            conn.deadline = 0.0
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            self._close(conn)

    def _lost(self, conn: _Conn) -> None:
        """The server closed the connection before the answer was complete."""
        from botocore.exceptions import ConnectionClosedError

        request = conn.request
        self._close(conn)
        if request is None:
            return
        if not conn.buffer and conn.used > 0 and not request.resent:
            # An idle keep-alive connection the server had already closed: the request never
            # reached it, so sending it once more on a new connection is safe.
            request.resent = True
            self._send(request)
            return
        self._done.append((request.token, ConnectionClosedError(endpoint_url=request.url)))

    def _failed(self, conn: _Conn, exc: BaseException) -> None:
        request = conn.request
        connecting = conn.state in (_CONNECTING, _HANDSHAKE)
        if conn.state == _IDLE and conn in self._idle:
            self._idle.remove(conn)
        self._close(conn)
        if request is not None:
            self._done.append(
                (request.token, network_error(exc, request.url, connecting=connecting))
            )

    def _sweep(self, now: float) -> None:
        for conn in list(self._open.values()):
            if conn.state != _IDLE and conn.deadline and now >= conn.deadline:
                self._failed(conn, TimeoutError("no answer within the timeout"))
