"""Request timing for the reliability rows: a lean keep-alive HTTP/1.1 client on a raw socket (so that the
client's own cost stays small next to what is measured) and percentiles."""

from __future__ import annotations

import socket
import time

from tests.support.rawhttp import RawResponse, read_response


class KeepAliveClient:
    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None

    def get(self, path: str, headers: bytes = b"") -> tuple[RawResponse, float]:
        """One GET on the kept connection (reconnecting when the server closed it); the response and seconds."""
        request = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
        for attempt in (1, 2):
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            started = time.perf_counter()
            try:
                self.sock.sendall(request)
                response = read_response(self.sock)
            except (ConnectionError, AssertionError):
                self.close()
                if attempt == 2:
                    raise
                continue
            elapsed = time.perf_counter() - started
            if (response.header(b"connection") or b"").lower() == b"close":
                self.close()
            return response, elapsed
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
