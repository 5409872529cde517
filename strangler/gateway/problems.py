"""RFC 9457 problem details, the body of every response the gateway itself produces."""

from __future__ import annotations

import orjson

TITLES = {
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


def problem_body(status: int, detail: str, **extra: object) -> bytes:
    doc: dict[str, object] = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status}
    doc["detail"] = detail
    doc.update({k: v for k, v in extra.items() if v is not None})
    return orjson.dumps(doc)


def problem_headers(body: bytes, correlation_id: str | None) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if correlation_id:
        headers.append((b"x-correlation-id", correlation_id.encode()))
    return headers
