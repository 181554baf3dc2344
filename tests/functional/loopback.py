"""A small HTTP/1.1 server on loopback, plain or TLS, that records every request reaching it,
and a fast-transport channel to it: for tests of the wire against real sockets.

Because the server records each request, "never sent twice once it may have reached the
server" is checked on the server's side, not inferred.
"""

from __future__ import annotations

import socket
import ssl
import threading

from hopper.wire.transport import Channel

ANSWER = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nx-amzn-RequestId: r-%d\r\n\r\n"


class Server:
    """Answers each request by `mode`: "ok" (keep-alive), "once" (answers, then closes the
    connection), "drop" (closes without answering), "hang" (never answers), "chunked"."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.mode = "ok"
        self.requests: list[bytes] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.tls = tls
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                with self.lock:
                    self.requests.append(body)
                    n = len(self.requests)
                if self.mode == "drop":
                    conn.close()
                    return
                if self.mode == "hang":
                    self.held.append(conn)
                    return
                if self.mode == "chunked":
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"4\r\nab" + b"cd\r\n" + b"3;x=y\r\nefg\r\n0\r\n\r\n"
                    )
                    continue
                conn.sendall(ANSWER % n)
                if self.mode == "once":
                    conn.close()
                    return
        except OSError:
            return

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


def channel(url: str, *, read_timeout: float = 5.0) -> Channel:
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return Channel(
        session.client("lambda", endpoint_url=url),
        credentials=session.get_credentials(),
        signing_name="lambda",
        region="us-east-1",
        read_timeout=read_timeout,
    )
