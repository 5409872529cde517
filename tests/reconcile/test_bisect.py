"""The bisection against in-memory sides (fakes of the ChecksumSession port)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import pytest

from strangler.reconcile.bisect import Figures, Leaf, Level, find_leaves


def h(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


class MemorySide:
    def __init__(self, rows: dict[int, str]) -> None:
        self.rows_by_key = rows
        self.key_hash = {key: h(str(key)) for key in rows}
        self.row_hash = {key: h(f"{key}|{value}") for key, value in rows.items()}
        self.calls: list[Level] = []

    def checksums(self, level: Level) -> Figures:
        self.calls.append(level)
        out: dict[int, tuple[int, int]] = {}
        for key in self.rows_by_key:
            kh = self.key_hash[key]
            if level.parents and (kh & ((1 << level.parent_bits) - 1)) not in level.parents:
                continue
            bucket = kh & ((1 << level.bits) - 1)
            count, total = out.get(bucket, (0, 0))
            out[bucket] = (count + 1, total + self.row_hash[key])
        return out

    def rows(self, leaves: Sequence[Leaf] | None) -> Iterator[tuple[tuple[int], Sequence[str | None]]]:
        wanted = {(leaf.bits, leaf.value) for leaf in leaves or ()}
        bits = {leaf.bits for leaf in leaves or ()}
        for key in sorted(self.rows_by_key):
            kh = self.key_hash[key]
            if leaves is None or any((b, kh & ((1 << b) - 1)) in wanted for b in bits):
                yield (key,), (self.rows_by_key[key],)


def differing(a: MemorySide, b: MemorySide, leaves: list[Leaf]) -> set[int]:
    left, right = dict(a.rows(leaves)), dict(b.rows(leaves))
    return {k[0] for k in left.keys() | right.keys() if left.get(k) != right.get(k)}


@pytest.mark.parametrize("changed", [[], [5], [1, 500, 9999], list(range(0, 10000, 997))])
def test_leaves_cover_every_difference_and_little_else(changed: list[int]) -> None:
    base = {k: f"v{k}" for k in range(10_000)}
    other = dict(base)
    for k in changed:
        other[k] = "changed"
    a, b = MemorySide(base), MemorySide(other)
    result = find_leaves(a, b, bucket_bits=6, leaf_rows=50)
    assert not result.whole
    assert differing(a, b, result.leaves) == set(changed)
    # 10,000 rows in 64 buckets: each differing bucket is split once more, so leaves hold a few rows each
    read = sum(1 for _ in a.rows(result.leaves))
    assert read <= len(changed) * 10
    assert result.equal_rows + read == 10_000
    assert len(a.calls) == (2 if changed else 1)


def test_missing_and_extra_rows() -> None:
    base = {k: "x" for k in range(1000)}
    other = {k: "x" for k in range(1, 1001)}
    a, b = MemorySide(base), MemorySide(other)
    result = find_leaves(a, b, bucket_bits=8, leaf_rows=64)
    assert differing(a, b, result.leaves) == {0, 1000}


def test_when_most_buckets_differ_the_whole_chunk_is_read() -> None:
    a = MemorySide({k: "x" for k in range(1000)})
    b = MemorySide({k: "y" for k in range(1000)})
    result = find_leaves(a, b, bucket_bits=4, leaf_rows=10)
    assert result.whole and result.leaves == [] and result.queries == 2
