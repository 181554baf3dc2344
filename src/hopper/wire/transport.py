"""The lean path for the two calls hopper makes at volume: Lambda Invoke and S3 ListObjectsV2.

boto3 spends about 2 ms of CPU on one `invoke` and over 100 ms on one 1000-key list page, most
of it in request serialization, response parsing and the event machinery, not on the wire.
This module keeps the parts of botocore that make a call correct and drops the rest:

- credentials come from the session's botocore chain, re-read per request so refreshing
  credentials are honoured;
- requests are signed by botocore's own SigV4 signer (the derived key is reused for the day,
  what is the same for a second is computed once);
- the endpoint, region and signing name are the ones the boto3 client resolved, so
  AWS_ENDPOINT_URL, profiles and S3's region redirects behave as they do on the boto3 path;
- `before-send` is emitted on the client's event system, as botocore does, so hooks that
  answer or fail a request (moto, fault injection, tracing) see these requests too;
- an error answer becomes the same botocore ClientError, and a network failure the same
  botocore exception, that boto3 would raise: the callers classify both paths with one code.

What it does not do: proxies. With HTTP(S)_PROXY set, `auto` picks the boto3 path.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from hashlib import sha256
from typing import Any
from urllib.parse import urlsplit

# Reconnect rather than reuse a connection idle this long: servers close idle keep-alive
# connections (Lambda after about a minute, many proxies after a few seconds).
IDLE_LIMIT = 4.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


def choose(transport: str) -> str:
    """`auto` means fast unless the environment asks for what only botocore does (proxies)."""
    if transport == "auto":
        return "boto3" if any(os.environ.get(name) for name in _PROXY_VARIABLES) else "fast"
    return transport


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


# --------------------------------------------------------------------------------- signing


@functools.lru_cache(maxsize=64)
def _signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    key = (f"AWS4{secret}").encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), sha256).digest()
    return key


@dataclass(frozen=True, slots=True)
class _Template:
    """What botocore's signer computes identically for every call to one URL in one second."""

    key: tuple[Any, ...]
    canonical_prefix: str
    # botocore's string to sign up to its last line, the canonical request's hash.
    string_prefix: str
    signing_key: bytes
    authorization_prefix: str
    headers: dict[str, str]


class Signer:
    """Signs with botocore's SigV4Auth; per thread, a call that differs from the previous one
    only in its body reuses botocore's canonical request and swaps in the new body's hash.

    Everything but the payload hash and the final HMAC is the same string for every invoke of
    one function within one second; computing it once per second is what brings signing from
    about 150 to about 20 microseconds. tests/unit/test_transport.py checks the result against
    botocore's own `add_auth`, header for header.
    """

    def __init__(self, credentials: Any, signing_name: str, region: str, *, s3: bool) -> None:
        self._credentials = credentials
        self._signing_name = signing_name
        self._region = region
        from botocore.auth import S3SigV4Auth, SigV4Auth

        self._class = S3SigV4Auth if s3 else SigV4Auth
        # S3's signer puts the payload hash in a header, so nothing is reusable across bodies.
        self._reuse = not s3
        self._local = threading.local()

    def sign(self, method: str, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        """The headers to send: `headers` plus X-Amz-Date, the token, and Authorization."""
        from botocore.auth import SIGV4_TIMESTAMP, get_current_datetime
        from botocore.exceptions import NoCredentialsError

        credentials = self._credentials.get_frozen_credentials() if self._credentials else None
        if credentials is None:
            raise NoCredentialsError()
        now = get_current_datetime()
        # strftime costs more than the rest of the stamp's handling: once per second.
        second = (now.second, now.minute, now.hour, now.day, now.month, now.year)
        local = self._local
        if getattr(local, "second", None) != second:
            local.second, local.stamp = second, now.strftime(SIGV4_TIMESTAMP)
        stamp: str = local.stamp
        if not self._reuse:
            return self._template(stamp, credentials, method, url, headers, body).headers
        key = (stamp, credentials, method, url, tuple(headers.items()))
        template: _Template | None = getattr(local, "template", None)
        if template is None or template.key != key:
            template = self._template(stamp, credentials, method, url, headers, b"")
            local.template = template
        canonical = template.canonical_prefix + sha256(body).hexdigest()
        to_sign = template.string_prefix + sha256(canonical.encode("utf-8")).hexdigest()
        signature = hmac.digest(template.signing_key, to_sign.encode("utf-8"), "sha256").hex()
        signed = dict(template.headers)
        signed["Authorization"] = template.authorization_prefix + signature
        return signed

    def _template(
        self,
        stamp: str,
        credentials: Any,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
    ) -> _Template:
        from botocore.awsrequest import AWSRequest

        auth = self._class(credentials, self._signing_name, self._region)
        request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
        request.context["timestamp"] = stamp
        # botocore's add_auth, step by step, stopping where the body first matters.
        auth._modify_request_before_signing(request)
        canonical = auth.canonical_request(request)
        to_sign = auth.string_to_sign(request, canonical)
        signature = auth.signature(to_sign, request)
        auth._inject_signature_to_request(request, signature)
        signed = {str(k): str(v) for k, v in request.headers.items()}
        authorization = signed.pop("Authorization")
        return _Template(
            key=(stamp, credentials, method, url, tuple(headers.items())),
            canonical_prefix=canonical.rsplit("\n", 1)[0] + "\n",
            string_prefix=to_sign.rsplit("\n", 1)[0] + "\n",
            signing_key=_signing_key(
                credentials.secret_key, stamp[0:8], self._region, self._signing_name
            ),
            authorization_prefix=authorization[: -len(signature)],
            headers={**signed, "Authorization": authorization},
        )


# ------------------------------------------------------------------------------------ HTTP


@functools.lru_cache(maxsize=1)
def _user_agent() -> str:
    """Says who sent the request, as boto3's does, in the service's logs."""
    import botocore

    from hopper import __version__

    return f"hopper/{__version__} (fast transport) botocore/{botocore.__version__}"


class _Closed(Exception):
    """The server closed the connection before a byte of the answer arrived."""


class _Connection:
    """One HTTP/1.1 keep-alive connection: a request out, an answer back, nothing more."""

    def __init__(
        self, scheme: str, host: str, port: int, connect_timeout: float, read_timeout: float
    ) -> None:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "https":
            sock = tls_context().wrap_socket(sock, server_hostname=host)
            # Python's own timeout: on a blocking TLS socket, CPython retries SSL_read on
            # "want read", so a kernel timeout (below) would expire into another wait, forever.
            sock.settimeout(read_timeout)
        else:
            # A blocking socket with the timeout kept by the kernel: Python's own timeout mode
            # costs a poll() and a failed recv() per read, a third of an invoke's CPU on
            # loopback. An expired wait raises EAGAIN (BlockingIOError): a read timeout.
            sock.settimeout(None)
            seconds = int(read_timeout)
            window = struct.pack("ll", seconds, int((read_timeout - seconds) * 1e6))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, window)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, window)
        self.sock = sock
        self.used = 0
        self.idle_since = time.monotonic()

    def close(self) -> None:
        self.sock.close()

    def exchange(self, head: bytes, body: bytes) -> Reply:
        self.sock.sendall(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.sock.sendall(body)
        buffer = bytearray()
        while True:
            chunk = self.sock.recv(262144)
            if not chunk and not buffer:
                raise _Closed
            buffer += chunk
            parsed = parse_reply(buffer, not chunk)
            if parsed is not None:
                break
        reply, keep, used = parsed
        self.used += 1
        self.idle_since = time.monotonic()
        if not keep or used != len(buffer):
            self.close()
            self.used = -1
        return reply


_MAX_HEAD = 65536


def parse_reply(buffer: bytearray, closed: bool) -> tuple[Reply, bool, int] | None:
    """The reply at the start of `buffer`, whether the connection stays open, and the bytes
    it took; None while incomplete. `closed`: no more bytes will come."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > _MAX_HEAD:
            raise ValueError("response head too large")
        if closed and buffer:
            raise ValueError("connection closed inside the response headers")
        return None
    head = bytes(buffer[:end]).decode("latin-1")
    first, _, rest = head.partition("\r\n")
    status_line = first.split(" ", 2)
    try:
        version, status = status_line[0], int(status_line[1])
    except (IndexError, ValueError):
        raise ValueError(f"malformed status line {first[:80]!r}") from None
    headers: dict[str, str] = {}
    for line in rest.split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    start = end + 4
    if status in (204, 304) or 100 <= status < 200:
        return Reply(status, headers, b""), keep, start
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return _chunked(buffer, start, status, headers, keep, closed)
    if "content-length" in headers:
        stop = start + int(headers["content-length"])
        if len(buffer) < stop:
            if closed:
                raise ValueError("connection closed inside the response body")
            return None
        return Reply(status, headers, bytes(buffer[start:stop])), keep, stop
    if not closed:
        return None
    return Reply(status, headers, bytes(buffer[start:])), False, len(buffer)


def _chunked(
    buffer: bytearray, at: int, status: int, headers: dict[str, str], keep: bool, closed: bool
) -> tuple[Reply, bool, int] | None:
    parts: list[bytes] = []
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            break
        size = int(bytes(buffer[at:line_end]).split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            trailer = line_end + 2
            if buffer[trailer : trailer + 2] == b"\r\n":
                return Reply(status, headers, b"".join(parts)), keep, trailer + 2
            stop = buffer.find(b"\r\n\r\n", trailer)
            if stop < 0:
                break
            return Reply(status, headers, b"".join(parts)), keep, stop + 4
        data_end = line_end + 2 + size
        if len(buffer) < data_end + 2:
            break
        parts.append(bytes(buffer[line_end + 2 : data_end]))
        at = data_end + 2
    if closed:
        raise ValueError("connection closed inside the response body")
    return None


@functools.lru_cache(maxsize=1)
def tls_context() -> Any:
    import ssl

    from botocore.httpsession import get_cert_path

    bundle = os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)
    return ssl.create_default_context(cafile=bundle if isinstance(bundle, str) else None)


@functools.lru_cache(maxsize=256)
def _request_line(method: str, url: str) -> str:
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}"


def request_bytes(prepared: Any) -> tuple[bytes, bytes]:
    """The HTTP/1.1 request head and body for a signed request."""
    lines = [_request_line(prepared.method, prepared.url)]
    lines.extend(f"{name}: {value}" for name, value in prepared.headers.items())
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if prepared.method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"), body


def network_error(exc: BaseException, url: str, *, connecting: bool) -> Exception:
    """The botocore exception boto3 raises for this socket failure.

    While connecting, nothing reached the server; after that, the request may have.
    """
    from botocore import exceptions as be

    error: Exception
    if connecting:
        if isinstance(exc, TimeoutError):
            error = be.ConnectTimeoutError(endpoint_url=url, error=exc)
        else:
            error = be.EndpointConnectionError(endpoint_url=url, error=exc)
    # A socket timeout, or SO_RCVTIMEO expired: the kernel answers EAGAIN.
    elif isinstance(exc, TimeoutError | BlockingIOError):
        error = be.ReadTimeoutError(endpoint_url=url, error=exc)
    else:
        error = be.ConnectionClosedError(endpoint_url=url)
    return error


class Channel:
    """Signed requests to one service endpoint, over one connection per thread.

    Built from a boto3 client: it takes the client's credentials, resolved endpoint and event
    system, and never calls AWS itself until asked to send.
    """

    def __init__(
        self,
        client: Any,
        *,
        credentials: Any,
        signing_name: str,
        region: str,
        s3: bool = False,
        read_timeout: float = 60.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self._events = client.meta.events
        self._service_id = client.meta.service_model.service_id.hyphenize()
        self._signer = Signer(credentials, signing_name, region, s3=s3)
        self._user_agent = _user_agent()
        self.read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[_Connection] = set()

    def send(
        self, operation: str, method: str, url: str, headers: dict[str, str], body: bytes = b""
    ) -> Reply:
        """Sign and send; a network failure raises the botocore exception boto3 would."""
        prepared, answered = self.prepare(operation, method, url, headers, body)
        if answered is not None:
            return answered
        return self._exchange(prepared)

    def prepare(
        self, operation: str, method: str, url: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[Any, Reply | None]:
        """The signed request, and the answer a `before-send` hook gave instead, if one did."""
        from botocore.awsrequest import AWSPreparedRequest

        signed = self._signer.sign(method, url, headers, body)
        signed["User-Agent"] = self._user_agent
        prepared = AWSPreparedRequest(method, url, signed, body, False)
        answered = self._events.emit_until_response(
            f"before-send.{self._service_id}.{operation}", request=prepared
        )[1]
        if answered is None:
            return prepared, None
        return prepared, Reply(
            int(answered.status_code),
            {str(k).lower(): str(v) for k, v in answered.headers.items()},
            answered.content,
        )

    def _exchange(self, prepared: Any) -> Reply:
        from botocore import exceptions as be

        parts = urlsplit(prepared.url)
        head, body = request_bytes(prepared)
        for fresh in (False, True):
            try:
                connection, reused = self._connection(parts, fresh)
            except OSError as exc:
                raise network_error(exc, prepared.url, connecting=True) from None
            try:
                return connection.exchange(head, body)
            except _Closed:
                self._drop(connection)
                # An idle keep-alive connection the server had already closed: the request
                # never reached it, so sending it once more on a new connection is safe.
                if reused and not fresh:
                    continue
                raise be.ConnectionClosedError(endpoint_url=prepared.url) from None
            except (OSError, ConnectionError, ValueError) as exc:
                self._drop(connection)
                raise network_error(exc, prepared.url, connecting=False) from None
        raise be.ConnectionClosedError(endpoint_url=prepared.url)  # pragma: no cover

    def _connection(self, parts: Any, fresh: bool) -> tuple[_Connection, bool]:
        current: _Connection | None = getattr(self._local, "connection", None)
        if current is not None:
            stale = time.monotonic() - current.idle_since > IDLE_LIMIT
            if fresh or stale or current.used < 0:
                self._drop(current)
            else:
                return current, current.used > 0
        port = parts.port or (443 if parts.scheme == "https" else 80)
        connection = _Connection(
            parts.scheme, parts.hostname, port, self._connect_timeout, self.read_timeout
        )
        self._local.connection = connection
        with self._lock:
            self._open.add(connection)
        return connection, False

    def _drop(self, connection: _Connection) -> None:
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            self._open.discard(connection)
        with contextlib.suppress(OSError):
            connection.close()

    def close(self) -> None:
        with self._lock:
            connections, self._open = self._open, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.close()


# ---------------------------------------------------------------------------- error answers


def client_error(reply: Reply, operation: str, *, attempts: int = 1) -> Exception:
    """The botocore ClientError boto3 would raise for this error answer, after `attempts`."""
    from botocore.exceptions import ClientError

    from hopper.errors import is_retryable_response

    error: dict[str, Any] = {"Code": "", "Message": ""}
    parsed: dict[str, Any] = {}
    content_type = reply.headers.get("content-type", "")
    text = reply.body.decode("utf-8", "replace")
    if "json" in content_type or text.lstrip().startswith("{"):
        try:
            body = json.loads(text) if text.strip() else {}
        except ValueError:
            body = {}
        if isinstance(body, dict):
            error["Message"] = str(body.get("message", body.get("Message", "")))
            code = body.get("__type") or body.get("code") or body.get("Code") or ""
            error["Code"] = str(code).rsplit("#", 1)[-1]
            parsed.update(
                (k, v) for k, v in body.items() if k not in {"message", "Message", "__type"}
            )
    elif text.lstrip().startswith("<"):
        import xml.etree.ElementTree as ET

        try:
            root = ET.fromstring(reply.body)  # noqa: S314 - see listing.parse_page
        except ET.ParseError:
            root = None
        if root is not None:
            node = root if root.tag.endswith("Error") else root.find(".//{*}Error")
            for child in node if node is not None else ():
                error[child.tag.rsplit("}", 1)[-1]] = child.text or ""
    header_code = reply.headers.get("x-amzn-errortype")
    if header_code:
        error["Code"] = header_code.split(":", 1)[0]
    if not error["Code"]:
        error["Code"] = str(reply.status)
    request_id = reply.headers.get("x-amzn-requestid") or reply.headers.get("x-amz-request-id")
    parsed["Error"] = error
    parsed["ResponseMetadata"] = {
        "HTTPStatusCode": reply.status,
        "HTTPHeaders": reply.headers,
        "RequestId": request_id or "",
    }
    if is_retryable_response(parsed):
        # botocore says so in the message when it stops retrying: keep the messages equal.
        parsed["ResponseMetadata"].update(MaxAttemptsReached=True, RetryAttempts=attempts - 1)
    error_class: type[Exception] = ClientError
    return error_class(parsed, operation)


def channel(
    client: Any,
    signing_name: str,
    *,
    read_timeout: float,
    s3: bool = False,
    region: str | None = None,
) -> Channel:
    """A channel that signs as `client` would: its credentials, region and signing name."""
    # The client's own credential object (a refreshing one refreshes in place); botocore
    # exposes no public accessor for it.
    signer = getattr(client, "_request_signer", None)
    credentials = getattr(signer, "_credentials", None)
    return Channel(
        client,
        credentials=credentials,
        signing_name=signing_name,
        region=region or client.meta.region_name,
        s3=s3,
        read_timeout=read_timeout,
    )
