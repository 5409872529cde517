"""A connector's local state: what the sink acknowledged (to count duplicates after a crash) and how far an
interrupted snapshot got. The source's own position (the slot, the offset row) stays the authority on what
is delivered; this file only ever runs ahead of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson

from strangler.cdc.errors import CdcError


class StateFile:
    """A small JSON document replaced atomically (write, rename) on every save; `durable` saves fsync first
    (snapshot progress must survive the machine; the acknowledged mark only counts duplicates)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._temporary = str(self.path.with_name(self.path.name + ".tmp"))
        self._ready = False

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CdcError(f"cannot read the connector state {self.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise CdcError(f"the connector state {self.path} is not a JSON object")
        return data

    def save(self, data: dict[str, Any], durable: bool = True) -> None:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._ready = True
        fd = os.open(self._temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, orjson.dumps(data))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self._temporary, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class MemoryState:
    """The same contract in memory, for tests."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = dict(data or {})
        self.saves = 0

    def load(self) -> dict[str, Any]:
        return dict(json.loads(json.dumps(self.data)))

    def save(self, data: dict[str, Any], durable: bool = True) -> None:
        self.data = json.loads(json.dumps(data))
        self.saves += 1

    def remove(self) -> None:
        self.data = {}
