"""A raw-socket HTTP/1.1 client: send exact bytes, read everything until the peer closes, parse responses."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def exchange(port: int, data: bytes, *, timeout: float = 5.0, host: str = "127.0.0.1") -> bytes:
    """Send `data`, return every byte received until the server closes (or `timeout` passes)."""
    return exchange_until_closed(port, data, timeout=timeout, host=host)[0]


def exchange_until_closed(port: int, data: bytes, *, timeout: float = 5.0,
                          host: str = "127.0.0.1") -> tuple[bytes, bool]:
    """Send `data`; every byte received, and whether the server closed the connection (FIN or reset) before
    `timeout` passed."""
    deadline = time.monotonic() + timeout
    received = bytearray()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return bytes(received), False
            except ConnectionResetError:
                return bytes(received), True
            if not chunk:
                return bytes(received), True
            received += chunk
    return bytes(received), False


def parse_responses(data: bytes) -> list[RawResponse]:
    """The complete responses in `data`, in order (Content-Length, chunked or read-until-close bodies)."""
    responses = []
    rest = data
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        response = RawResponse(int(lines[0].split(b" ")[1]))
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            response.headers.append((name.lower(), value.strip(b" \t")))
        length = response.header(b"content-length")
        if response.header(b"transfer-encoding") == b"chunked":
            response.body, rest = _dechunk(rest)
        elif length is not None:
            response.body, rest = rest[: int(length)], rest[int(length) :]
        else:
            response.body, rest = rest, b""
        responses.append(response)
    return responses


def request(port: int, data: bytes, *, timeout: float = 5.0) -> RawResponse:
    """Send one request (which should say `Connection: close`) and return its response."""
    responses = parse_responses(exchange(port, data, timeout=timeout))
    if not responses:
        raise AssertionError(f"no response to {data[:200]!r}")
    return responses[0]


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    body = bytearray()
    while True:
        line, _, data = data.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            _, _, data = data.partition(b"\r\n")  # no trailers expected
            return bytes(body), data
        body += data[:size]
        data = data[size + 2 :]


def read_response(sock: socket.socket) -> RawResponse:
    """Read one response with a Content-Length body from a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    response = parse_responses(head + b"\r\n\r\n")[0]
    length = int(response.header(b"content-length") or 0)
    while len(body) < length:
        body += sock.recv(65536)
    response.body = body[:length]
    return response
