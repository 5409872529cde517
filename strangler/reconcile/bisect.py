"""Finding the few differing rows of a chunk without reading the rest: checksummed hash buckets.

Every row has a 64-bit hash of its canonical key, `h`. Level 0 asks each side for the count and the sum
of row hashes per bucket `h & (B-1)` (one query per side); only buckets whose figures differ go on.
A differing bucket holding more than `leaf_rows` rows is split at the next level by the next bits of
`h` (again one query per side for all such buckets); the rest are leaves, whose rows alone are read and
compared row by row. With rare drift, the work is one checksum pass over the data plus a scan of the
keys of the chunks that differ.

The sides are ports (`ChecksumSession`); this module does no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

from strangler.reconcile.drift import Key

T = TypeVar("T")
Figures = dict[int, tuple[int, int]]  # bucket value -> (row count, sum of row hashes)
MAX_BITS = 36  # the chunk number of hash-chunked keys uses higher bits


@dataclass(frozen=True, slots=True)
class Level:
    """The 2**bits buckets of a chunk (hash: `h & (2**bits - 1)`), limited to rows in the `parents` buckets
    at the coarser resolution `parent_bits`."""

    bits: int
    parent_bits: int = 0
    parents: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Leaf:
    """The rows of bucket `value` at resolution `bits`."""

    bits: int
    value: int


@dataclass(slots=True)
class BisectResult:
    leaves: list[Leaf] = field(default_factory=list)
    equal_rows: int = 0  # rows in buckets whose checksums matched (compared, no drift)
    whole: bool = False  # so many buckets differ that the whole chunk is read instead
    queries: int = 0


class ChecksumSession(Protocol):
    """One side's view of one chunk, in one consistent snapshot."""

    def checksums(self, level: Level) -> Figures:
        """Count and sum of row hashes per bucket of `level` (buckets without rows are absent)."""
        ...

    def rows(self, leaves: Sequence[Leaf] | None) -> Iterator[tuple[Key, Sequence[str | None]]]:
        """The canonical rows in `leaves` (None: the whole chunk), ordered by key."""
        ...


def both(run_legacy: Callable[[], T], run_new: Callable[[], T]) -> tuple[T, T]:
    """Runs the two sides' calls one after the other (the runner passes a concurrent version)."""
    return run_legacy(), run_new()


def find_leaves(
    legacy: ChecksumSession,
    new: ChecksumSession,
    *,
    bucket_bits: int,
    leaf_rows: int,
    whole_share: float = 0.5,
    max_bits: int = MAX_BITS,
    run_both: Callable[[Callable[[], Figures], Callable[[], Figures]], tuple[Figures, Figures]] = both,
) -> BisectResult:
    """The leaves holding every row that differs between the two sides of a chunk.

    Bucket values are the sides' business (hash bits or key ranges); both sides must number alike, and a
    level's buckets must nest in its parents'. `max_bits` is the finest resolution the sides can bucket by.
    """
    result = BisectResult()
    bucket_bits = min(bucket_bits, max_bits)
    level: Level | None = Level(bucket_bits)
    first = True
    while level is not None:
        current = level
        a, b = run_both(partial(legacy.checksums, current), partial(new.checksums, current))
        result.queries += 2
        split: list[int] = []
        for bucket in a.keys() | b.keys():
            fa, fb = a.get(bucket), b.get(bucket)
            if fa == fb:
                result.equal_rows += fa[0] if fa is not None else 0
                continue
            rows = max(fa[0] if fa else 0, fb[0] if fb else 0)
            if rows <= leaf_rows or current.bits + bucket_bits > max_bits:
                result.leaves.append(Leaf(current.bits, bucket))
            else:
                split.append(bucket)
        if first and (len(result.leaves) + len(split)) > whole_share * (1 << current.bits):
            # most buckets differ: reading the chunk once beats narrowing it down (counted against every
            # bucket, not only those with rows, so keys bunched in a few range buckets are narrowed down)
            return BisectResult([], 0, True, result.queries)
        first = False
        level = Level(current.bits + bucket_bits, current.bits, tuple(sorted(split))) if split else None
    return result
