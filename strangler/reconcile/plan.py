"""A job's plan: its sides opened and described, each field's normalisation fixed, the key space chunked.

Integer keys (one column, integer on every SQL side) are cut into ranges of about `chunk_rows` rows (at
quantiles of a block sample of the keys, so sparse keys still give even chunks), so each chunk reads through
the key's index; other keys into `chunks` hash partitions. The chunk list is
stored with the run, so an interrupted run resumes on the same chunks even if rows came and went.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy.engine import make_url

from strangler.precedence.rules import Side
from strangler.reconcile.config import FieldSpec, HttpSide, JobConfig, SqlSide
from strangler.reconcile.http_side import HttpStateSide
from strangler.reconcile.normalise import ColumnType, FieldKind, resolve_kind
from strangler.reconcile.sql_side import Chunk, SqlStateSide

HTTP_CHUNK_ROWS = 5000  # an HTTP side reads slowly (rate-limited): checkpoint more often


@dataclass
class JobPlan:
    name: str
    job: JobConfig
    names: list[str]  # compared fields, in order (the legacy side's names)
    key_names: list[str]  # the legacy side's key columns
    key_kinds: list[FieldKind]
    kinds: list[FieldKind]
    legacy: SqlStateSide | HttpStateSide
    new: SqlStateSide | HttpStateSide
    chunks: list[Chunk] = field(default_factory=list)
    estimated_rows: int = 0

    @property
    def sql_sides(self) -> list[SqlStateSide]:
        return [s for s in (self.legacy, self.new) if isinstance(s, SqlStateSide)]

    @property
    def http(self) -> HttpStateSide | None:
        for side in (self.legacy, self.new):
            if isinstance(side, HttpStateSide):
                return side
        return None

    @property
    def http_side(self) -> Side | None:
        return "legacy" if isinstance(self.legacy, HttpStateSide) else ("new" if self.http else None)

    def fingerprint(self) -> str:
        """Changes when anything that decides the comparison changes (then a stored checkpoint is void)."""
        return hashlib.sha256(orjson.dumps(self.job.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
                              ).hexdigest()[:32]

    def chunks_json(self) -> str:
        chunks = [[c.index, c.lo, c.hi, c.of, c.base, c.span_bits] for c in self.chunks]
        return orjson.dumps({"config": self.fingerprint(), "chunks": chunks}).decode()

    def close(self) -> None:
        for side in self.sql_sides:
            side.close()


def chunks_from_json(text: str) -> tuple[str, list[Chunk]]:
    data = orjson.loads(text)
    return data["config"], [Chunk(*item) for item in data["chunks"]]


def _columns(spec: FieldSpec, name: str, side: SqlSide | HttpSide, legacy: bool) -> str:
    if legacy:
        if isinstance(side, HttpSide):
            return spec.legacy or "/" + name
        return name
    return spec.new


def build_plan(name: str, job: JobConfig) -> JobPlan:
    """Opens the sides, reads their column types and fixes the normalisation (SideUnavailable, UnsupportedSide)."""
    specs = job.specs()
    names = list(specs)
    legacy_cols = [_columns(specs[n], n, job.legacy, True) for n in names]
    new_cols = [_columns(specs[n], n, job.new, False) for n in names]
    sides: list[Any] = []
    types: list[dict[str, ColumnType] | None] = []
    # PostgreSQL's own hashes only when both sides are PostgreSQL; otherwise a hash every database computes
    backends = {make_url(c.url).get_backend_name() for c in (job.legacy, job.new) if isinstance(c, SqlSide)}
    portable = backends != {"postgresql"}
    for config, cols in ((job.legacy, legacy_cols), (job.new, new_cols)):
        if isinstance(config, SqlSide):
            side = SqlStateSide(config, portable=portable)
            types.append(side.describe([*config.key, *cols]))
            sides.append(side)
        else:
            types.append(None)
            sides.append(None)
    legacy_types, new_types = types

    def column_type(found: dict[str, ColumnType] | None, column: str) -> ColumnType | None:
        return found[column] if found is not None else None

    key_kinds = []
    for lk, nk in zip(job.legacy.key, job.new.key, strict=True):
        kind = resolve_kind(FieldSpec(new=nk), column_type(legacy_types, lk), column_type(new_types, nk))
        key_kinds.append(FieldKind(kind.type, kind.scale, trim=False))
    kinds = [resolve_kind(specs[n], column_type(legacy_types, lc), column_type(new_types, nc))
             for n, lc, nc in zip(names, legacy_cols, new_cols, strict=True)]
    for i, (config, cols) in enumerate(((job.legacy, legacy_cols), (job.new, new_cols))):
        if isinstance(config, HttpSide):
            sides[i] = HttpStateSide(config, cols, kinds)
        else:
            sides[i].bind(key_kinds, cols, kinds)
    plan = JobPlan(name, job, names, list(job.legacy.key), key_kinds, kinds, sides[0], sides[1])
    plan.chunks, plan.estimated_rows = _chunk(plan)
    return plan


def _chunk(plan: JobPlan) -> tuple[list[Chunk], int]:
    chunk_rows = plan.job.chunk_rows if plan.http is None else min(plan.job.chunk_rows, HTTP_CHUNK_ROWS)
    if len(plan.key_kinds) != 1 or plan.key_kinds[0].type != "integer":
        return [Chunk(i, of=plan.job.chunks) for i in range(plan.job.chunks)], 0
    known = [b for b in (side.integer_bounds() for side in plan.sql_sides) if b is not None]
    if not known:
        return [Chunk(0)], 0  # every side is empty
    lo, hi = min(b[0] for b in known), max(b[1] for b in known) + 1
    rows = max(b[2] for b in known)
    count = max(1, min(math.ceil(rows / chunk_rows), hi - lo))
    edges = _sampled_edges(plan, rows, count) if count > 1 else []
    if not edges:  # no sample (query sides): cut the key range evenly
        step = math.ceil((hi - lo) / count)
        edges = [lo + i * step for i in range(1, count)]
    # open ends: rows added below the lowest or above the highest key still fall in a chunk
    starts: Sequence[int | None] = [None, *edges]
    ends: Sequence[int | None] = [*edges, None]
    chunks = []
    for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
        base, top = (lo if a is None else a), (hi if b is None else b)
        span_bits = max(1, (top - base - 1).bit_length())
        if span_bits > 62 or base < -(2**62) or base > 2**62:  # bucket arithmetic must stay within bigint
            chunks.append(Chunk(i, a, b))
        else:
            chunks.append(Chunk(i, a, b, base=base, span_bits=span_bits))
    return chunks, rows


def _sampled_edges(plan: JobPlan, rows: int, count: int) -> list[int]:
    """Chunk edges at quantiles of a block sample of the keys, so that sparse keys still give even chunks."""
    sample: list[int] = []
    for side in plan.sql_sides:
        keys = side.sample_keys(rows, wanted=count * 100)
        if not keys:
            return []
        sample.extend(keys)
    if len(sample) < count * 10:
        return []
    sample.sort()
    edges = sorted({sample[len(sample) * i // count] for i in range(1, count)})
    return edges
