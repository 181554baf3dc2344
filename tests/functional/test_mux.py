"""The multiplexer against real sockets: the recording loopback server, plain and TLS."""

from __future__ import annotations

import datetime
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import (
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from hopper.wire import transport
from hopper.wire.mux import Mux
from hopper.wire.transport import Reply, parse_reply

from .loopback import Server, channel


def answers(mux: Mux, count: int, *, within: float = 10.0) -> dict[int, Reply | Exception]:
    got: dict[int, Reply | Exception] = {}
    ends = time.monotonic() + within
    while len(got) < count and time.monotonic() < ends:
        got.update(mux.wait(0.1))
    assert len(got) == count, got
    return got


def send(mux: Mux, url: str, tokens: range | list[int]) -> None:
    for token in tokens:
        mux.start(token, "Invoke", "POST", f"{url}/x", {}, b'{"n": %d}' % token)


def test_many_requests_share_a_few_keep_alive_connections(server: Server) -> None:
    url = f"http://127.0.0.1:{server.port}"
    mux = Mux(channel(url), 8)
    done: dict[int, Reply | Exception] = {}
    for wave in range(25):
        send(mux, url, range(wave * 8, wave * 8 + 8))
        done.update(answers(mux, 8))
    mux.close()
    assert sorted(done) == list(range(200))
    assert all(isinstance(r, Reply) and r.status == 202 for r in done.values())
    assert sorted(server.requests) == sorted(b'{"n": %d}' % n for n in range(200))
    assert server.connections <= 8


BIG = b'{"blob": "' + b"x" * (5 * 1024 * 1024) + b'"}'


@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_a_body_larger_than_the_socket_buffer_goes_out_whole(
    tls: bool, request: pytest.FixtureRequest
) -> None:
    """A 5 MB payload (a synchronous invoke may carry 6 MB) is written in many partial sends,
    waiting for the socket to take more each time."""
    served: Server = request.getfixturevalue("tls_server" if tls else "server")
    url = f"{'https' if tls else 'http'}://127.0.0.1:{served.port}"
    mux = Mux(channel(url), 2)
    mux.start(1, "Invoke", "POST", f"{url}/x", {}, BIG)
    mux.start(2, "Invoke", "POST", f"{url}/x", {}, b"{}")
    got = answers(mux, 2)
    mux.close()
    assert all(isinstance(r, Reply) and r.status == 202 for r in got.values())
    assert sorted(served.requests, key=len) == [b"{}", BIG]


def test_a_chunked_answer_is_read_whole(server: Server) -> None:
    server.mode = "chunked"
    url = f"http://127.0.0.1:{server.port}"
    mux = Mux(channel(url), 2)
    send(mux, url, [1, 2, 3])
    got = answers(mux, 3)
    mux.close()
    assert [r.body for r in got.values() if isinstance(r, Reply)] == [b"abcdefg"] * 3


def test_a_connection_closed_while_idle_is_replaced_and_the_request_sent_once(
    server: Server,
) -> None:
    server.mode = "once"
    url = f"http://127.0.0.1:{server.port}"
    mux = Mux(channel(url), 1)
    send(mux, url, [1])
    assert isinstance(answers(mux, 1)[1], Reply)
    # The server has closed the kept-alive connection; the next request goes out on it before
    # the loop has looked, finds it closed with no byte of answer, and goes out once more.
    time.sleep(0.2)
    send(mux, url, [2])
    second = answers(mux, 1)[2]
    mux.close()
    assert isinstance(second, Reply) and second.status == 202
    assert server.requests == [b'{"n": 1}', b'{"n": 2}']
    assert server.connections == 2


def test_a_request_dropped_after_it_arrived_is_not_sent_again(server: Server) -> None:
    server.mode = "drop"
    url = f"http://127.0.0.1:{server.port}"
    mux = Mux(channel(url), 4)
    send(mux, url, [1, 2])
    got = answers(mux, 2)
    mux.close()
    assert all(isinstance(e, ConnectionClosedError) for e in got.values())
    assert sorted(server.requests) == [b'{"n": 1}', b'{"n": 2}']


def test_no_answer_within_the_read_timeout_is_a_read_timeout(server: Server) -> None:
    server.mode = "hang"
    url = f"http://127.0.0.1:{server.port}"
    mux = Mux(channel(url, read_timeout=0.3), 2)
    started = time.monotonic()
    send(mux, url, [1])
    got = answers(mux, 1)
    mux.close()
    assert isinstance(got[1], ReadTimeoutError)
    assert 0.3 <= time.monotonic() - started < 3


def test_a_refused_connection_is_an_endpoint_connection_error() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    mux = Mux(channel(url), 2)
    send(mux, url, [1, 2])
    got = answers(mux, 2)
    mux.close()
    assert all(isinstance(e, EndpointConnectionError) for e in got.values())


def test_a_hook_that_answers_or_raises_is_honoured_without_the_network() -> None:
    url = "http://127.0.0.1:9"  # discard port: nothing may be sent there
    lane = channel(url)
    mux = Mux(lane, 2)

    def hook(request: Any, **_: Any) -> Any:
        from .faults import response

        if b'"n": 1' in request.body:
            return response(request.url, 429, "TooManyRequestsException", {"message": "slow"})
        raise ConnectionClosedError(endpoint_url=request.url)

    lane._events.register_first("before-send.lambda.Invoke", hook)
    send(mux, url, [1, 2])
    got = mux.wait(0)
    mux.close()
    assert dict(got)[1].status == 429  # type: ignore[union-attr]
    assert isinstance(dict(got)[2], ConnectionClosedError)


# ---------------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A TLS server with a certificate for 127.0.0.1, trusted through AWS_CA_BUNDLE."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert_file))
    transport.tls_context.cache_clear()
    served = Server(tls=context)
    yield served
    served.close()
    transport.tls_context.cache_clear()


def test_tls_requests_go_through_the_handshake_and_keep_alive(tls_server: Server) -> None:
    url = f"https://127.0.0.1:{tls_server.port}"
    mux = Mux(channel(url), 4)
    send(mux, url, range(12))
    got = answers(mux, 12)
    # The blocking channel speaks TLS to the same server too.
    direct = channel(url).send("Invoke", "POST", f"{url}/x", {}, b"{}")
    mux.close()
    assert all(isinstance(r, Reply) and r.status == 202 for r in got.values())
    assert direct.status == 202
    assert len(tls_server.requests) == 13
    assert tls_server.connections <= 5


def test_no_answer_over_tls_is_a_read_timeout_on_both_paths(tls_server: Server) -> None:
    """A TLS server that never answers: both the blocking channel (which hung here, as CPython
    retries a blocking SSL read past the kernel's timeout) and the multiplexer give botocore's
    ReadTimeoutError within the read timeout."""
    tls_server.mode = "hang"
    url = f"https://127.0.0.1:{tls_server.port}"
    mux = Mux(channel(url, read_timeout=0.3), 1)
    send(mux, url, [1])
    got = answers(mux, 1)
    mux.close()
    assert isinstance(got[1], ReadTimeoutError)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        channel(url, read_timeout=0.3).send("Invoke", "POST", f"{url}/x", {}, b"{}")
    assert time.monotonic() - started < 3
    assert len(tls_server.requests) == 2


def test_an_untrusted_certificate_fails_to_connect(
    tls_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_CA_BUNDLE")
    transport.tls_context.cache_clear()
    url = f"https://127.0.0.1:{tls_server.port}"
    mux = Mux(channel(url), 1)
    send(mux, url, [1])
    got = answers(mux, 1)
    mux.close()
    assert isinstance(got[1], EndpointConnectionError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(got[1].kwargs["error"])
    assert tls_server.requests == []


# ------------------------------------------------------------------------------ parsing

PARSE_CASES: list[tuple[bytes, Callable[[Reply], bool]]] = [
    (b"HTTP/1.1 204 No Content\r\n\r\n", lambda r: r.status == 204 and r.body == b""),
    (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b: c\r\n\r\nhello",
        lambda r: r.body == b"hello" and r.headers["x-a"] == "b: c",
    ),
    (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n",
        lambda r: r.body == b"hi",
    ),
]


@pytest.mark.parametrize(("raw", "check"), PARSE_CASES)
def test_a_reply_parses_the_same_however_it_is_split(
    raw: bytes, check: Callable[[Reply], bool]
) -> None:
    for cut in range(1, len(raw)):
        assert parse_reply(bytearray(raw[:cut]), False) is None, cut
    parsed = parse_reply(bytearray(raw + b"HTTP/1.1 200"), False)
    assert parsed is not None
    reply, keep, used = parsed
    assert check(reply) and keep and used == len(raw)


def test_a_reply_without_a_length_ends_with_the_connection() -> None:
    raw = bytearray(b"HTTP/1.0 200 OK\r\n\r\nall of it")
    assert parse_reply(raw, False) is None
    parsed = parse_reply(raw, True)
    assert parsed is not None and parsed[0].body == b"all of it" and parsed[1] is False
    with pytest.raises(ValueError, match="inside the response body"):
        parse_reply(bytearray(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"), True)
