"""A legacy upstream in a process of its own, so that a test can SIGKILL it and start it again on the same port:
`python -m tests.reliability.upstream_process PORT` answers every request `{"server": "legacy", "path": ...}`."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

import orjson


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = orjson.dumps({"server": "legacy", "path": scope["path"]})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class UpstreamProcess:
    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> float:
        """Start and wait until the port accepts connections; returns that moment (time.monotonic())."""
        self.process = subprocess.Popen([sys.executable, "-m", "tests.reliability.upstream_process", str(self.port)],
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return time.monotonic()
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"the upstream did not listen on {self.port} within {timeout} s")

    def kill(self) -> float:
        assert self.process is not None
        self.process.kill()  # SIGKILL
        self.process.wait(5)
        return time.monotonic()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http="httptools", loop="uvloop", lifespan="off",
                log_level="warning", access_log=False)
