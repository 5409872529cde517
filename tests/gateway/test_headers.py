from __future__ import annotations

import os
import uuid

import pytest

from strangler.gateway.headers import (
    HOP_BY_HOP,
    CorrelationIds,
    HeaderRejected,
    PreparedRequestHeaders,
    TrustedProxies,
    filter_response_headers,
    prepare_request_headers,
)

Headers = list[tuple[bytes, bytes]]


def prepare(
    headers: Headers,
    *,
    peer: str | None = "203.0.113.7",
    scheme: str = "http",
    trusted: bool = False,
    preserve_host: bool = False,
) -> PreparedRequestHeaders:
    return prepare_request_headers(headers, peer=peer, scheme=scheme, trusted=trusted, preserve_host=preserve_host)


def values(prepared: PreparedRequestHeaders, name: str) -> list[str]:
    return [v for n, v in prepared.upstream if n == name]


def names(prepared: PreparedRequestHeaders) -> set[str]:
    return {n for n, _ in prepared.upstream}


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_request_hop_by_hop_headers_are_not_forwarded(name: bytes) -> None:
    prepared = prepare([(b"host", b"shop"), (name, b"x"), (b"accept", b"*/*")])
    assert name.decode() not in names(prepared)
    assert values(prepared, "accept") == ["*/*"]


def test_request_headers_named_by_connection_are_not_forwarded() -> None:
    prepared = prepare(
        [
            (b"connection", b"keep-alive, X-Secret-Debug"),
            (b"connection", b" X-Other ,,"),
            (b"x-secret-debug", b"1"),
            (b"x-other", b"2"),
            (b"x-kept", b"3"),
        ]
    )
    assert "x-secret-debug" not in names(prepared)
    assert "x-other" not in names(prepared)
    assert values(prepared, "x-kept") == ["3"]


@pytest.mark.parametrize(
    "nominated",
    [b"host", b"Host", b"x-forwarded-for", b"X-Forwarded-Proto", b"x-forwarded-host", b"forwarded", b"x-real-ip",
     b"x-correlation-id", b"content-length"],
)
def test_connection_may_not_name_what_the_proxy_relies_on(nominated: bytes) -> None:
    with pytest.raises(HeaderRejected) as info:
        prepare([(b"connection", b"close, " + nominated)])
    assert nominated.lower().decode() in str(info.value)


def test_forwarding_headers_from_an_untrusted_peer_are_replaced() -> None:
    prepared = prepare(
        [
            (b"host", b"shop.example"),
            (b"x-forwarded-for", b"10.9.9.9"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", b"admin.internal"),
            (b"forwarded", b"for=10.9.9.9"),
            (b"x-real-ip", b"10.9.9.9"),
        ],
        peer="203.0.113.7",
        scheme="http",
    )
    assert values(prepared, "x-forwarded-for") == ["203.0.113.7"]
    assert values(prepared, "x-forwarded-proto") == ["http"]
    assert values(prepared, "x-forwarded-host") == ["shop.example"]
    assert values(prepared, "forwarded") == []
    assert values(prepared, "x-real-ip") == []


def test_forwarding_headers_from_a_trusted_proxy_are_kept_and_appended() -> None:
    prepared = prepare(
        [
            (b"host", b"gateway.internal"),
            (b"x-forwarded-for", b"198.51.100.1"),
            (b"x-forwarded-for", b"198.51.100.2, 198.51.100.3"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", b"shop.example"),
            (b"forwarded", b"for=198.51.100.1;proto=https"),
        ],
        peer="10.0.0.5",
        trusted=True,
    )
    assert values(prepared, "x-forwarded-for") == ["198.51.100.1, 198.51.100.2, 198.51.100.3, 10.0.0.5"]
    assert values(prepared, "x-forwarded-proto") == ["https"]
    assert values(prepared, "x-forwarded-host") == ["shop.example"]
    assert values(prepared, "forwarded") == ["for=198.51.100.1;proto=https"]


def test_forwarding_headers_without_a_peer_say_unknown() -> None:
    prepared = prepare([], peer=None, scheme="https")
    assert values(prepared, "x-forwarded-for") == ["unknown"]
    assert values(prepared, "x-forwarded-proto") == ["https"]
    assert values(prepared, "x-forwarded-host") == []


@pytest.mark.parametrize(
    ("networks", "peer", "trusted"),
    [
        (["10.0.0.0/8"], "10.1.2.3", True),
        (["10.0.0.0/8"], "11.1.2.3", False),
        (["192.168.1.10"], "192.168.1.10", True),
        (["2001:db8::/32"], "2001:db8::1", True),
        (["10.0.0.0/8"], "2001:db8::1", False),
        (["10.0.0.0/8"], "not-an-ip", False),
        (["10.0.0.0/8"], None, False),
        ([], "10.1.2.3", False),
    ],
)
def test_trusted_proxies(networks: list[str], peer: str | None, trusted: bool) -> None:
    assert TrustedProxies.parse(networks).trusts(peer) is trusted


def test_host_goes_to_x_forwarded_host_unless_preserved() -> None:
    default = prepare([(b"host", b"shop.example:8080")])
    assert values(default, "host") == []
    assert values(default, "x-forwarded-host") == ["shop.example:8080"]
    assert default.host == b"shop.example:8080"
    preserved = prepare([(b"host", b"shop.example:8080")], preserve_host=True)
    assert values(preserved, "host") == ["shop.example:8080"]
    assert values(preserved, "x-forwarded-host") == ["shop.example:8080"]


def test_repeated_host_is_rejected() -> None:
    with pytest.raises(HeaderRejected, match="Host"):
        prepare([(b"host", b"shop.example"), (b"host", b"admin.internal")])


@pytest.mark.parametrize("cid", [b"abc", b"req-42.7:x_y", b"A" * 128, str(uuid.uuid4()).encode()])
def test_a_valid_correlation_id_is_kept(cid: bytes) -> None:
    prepared = prepare([(b"x-correlation-id", cid)])
    assert prepared.correlation_id == cid.decode()
    assert values(prepared, "x-correlation-id") == [cid.decode()]


@pytest.mark.parametrize(
    "cid", [b"", b"A" * 129, b"has space", b"semi;colon", b"abc\n", b"abc\r\nX-Injected: 1", b"caf\xc3\xa9", b"a/b"]
)
def test_an_invalid_correlation_id_is_replaced_by_a_generated_one(cid: bytes) -> None:
    prepared = prepare([(b"x-correlation-id", cid)])
    assert prepared.correlation_id != cid.decode("latin-1")
    assert uuid.UUID(prepared.correlation_id).version == 4
    assert values(prepared, "x-correlation-id") == [prepared.correlation_id]


def test_a_missing_correlation_id_is_generated_fresh_per_request() -> None:
    first, second = prepare([]), prepare([])
    assert uuid.UUID(first.correlation_id).version == 4
    assert first.correlation_id != second.correlation_id


def test_the_first_valid_correlation_id_wins() -> None:
    cid = b"x-correlation-id"
    prepared = prepare([(cid, b"bad id"), (cid, b"good"), (cid, b"2nd")])
    assert prepared.correlation_id == "good"
    assert values(prepared, "x-correlation-id") == ["good"]


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"5"), (b"content-length", b"5")],
        [(b"content-length", b"5"), (b"content-length", b"6")],
        [(b"content-length", b"")],
        [(b"content-length", b"-1")],
        [(b"content-length", b"+5")],
        [(b"content-length", b"5, 5")],
        [(b"content-length", b"0x10")],
        [(b"content-length", "٣".encode())],
    ],
)
def test_repeated_or_invalid_content_length_is_rejected(headers: Headers) -> None:
    with pytest.raises(HeaderRejected, match="Content-Length"):
        prepare(headers)


def test_content_length_with_transfer_encoding_is_rejected() -> None:
    with pytest.raises(HeaderRejected, match="Content-Length together with Transfer-Encoding"):
        prepare([(b"transfer-encoding", b"chunked"), (b"content-length", b"5")])


def test_body_framing_is_reported() -> None:
    sized = prepare([(b"content-length", b"42")])
    assert (sized.content_length, sized.chunked) == (42, False)
    assert values(sized, "content-length") == ["42"]
    chunked = prepare([(b"transfer-encoding", b"chunked")])
    assert (chunked.content_length, chunked.chunked) == (None, True)
    assert values(chunked, "transfer-encoding") == []
    empty = prepare([])
    assert (empty.content_length, empty.chunked) == (None, False)


def test_expect_is_answered_by_the_proxy_not_forwarded() -> None:
    assert values(prepare([(b"expect", b"100-continue")]), "expect") == []


@pytest.mark.parametrize("name", [b"x-note", b"x-forwarded-for", b"host"])
def test_a_value_that_is_not_utf8_is_rejected_naming_the_header(name: bytes) -> None:
    with pytest.raises(HeaderRejected) as info:
        prepare([(name, b"caf\xe9")], trusted=True, preserve_host=True)
    assert repr(name.decode()) in str(info.value)
    assert "not UTF-8" in str(info.value)


def test_utf8_values_are_forwarded_as_text() -> None:
    assert values(prepare([(b"x-note", "café".encode())]), "x-note") == ["café"]


def test_response_hop_by_hop_and_nominated_headers_are_removed() -> None:
    raw = [
        (b"Content-Type", b"application/json"),
        (b"Connection", b"keep-alive, X-Backend-Secret"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"X-Backend-Secret", b"s3cr3t"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"Upgrade", b"h2c"),
        (b"Trailer", b"x-checksum"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    ]
    assert filter_response_headers(raw, b"cid-1") == [
        (b"content-type", b"application/json"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"x-correlation-id", b"cid-1"),
    ]


def test_response_correlation_id_is_the_requests() -> None:
    out = filter_response_headers([(b"X-Correlation-Id", b"from-upstream")], b"ours")
    assert [v for n, v in out if n == b"x-correlation-id"] == [b"ours"]


def test_response_header_values_are_passed_back_byte_exact() -> None:
    out = filter_response_headers([(b"x-legacy", b"caf\xe9")], b"c")
    assert (b"x-legacy", b"caf\xe9") in out


def test_generated_correlation_ids_are_version_4_uuids_and_unique() -> None:
    ids = CorrelationIds()
    made = [ids() for _ in range(10_000)]
    assert len(set(made)) == len(made)
    for cid in made[:100] + made[-100:]:
        parsed = uuid.UUID(cid)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, cid)
    assert CorrelationIds()()[:23] != ids()[:23]  # another generator draws its own random part


def test_a_forked_child_does_not_repeat_its_parents_correlation_ids() -> None:
    ids = CorrelationIds()
    ids()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, ids().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    os.close(read)
    parent = ids()
    assert child != parent and child[:23] != parent[:23]
