"""A connector's local state: what the sink acknowledged (to count duplicates after a crash) and how far an
interrupted snapshot got. The source's own position (the slot, the offset row) stays the authority on what
is delivered; this file only ever runs ahead of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from strangler.cdc.errors import CdcError


class StateFile:
    """A small JSON document replaced atomically (write, rename) on every save; `durable` saves fsync first
    (snapshot progress must survive the machine; the acknowledged mark only counts duplicates)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as fh:
            json.dump(data, fh, separators=(",", ":"))
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(temporary, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class MemoryState:
    """The same contract in memory, for tests."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = dict(data or {})
        self.saves = 0

    def load(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.data))

    def save(self, data: dict[str, Any], durable: bool = True) -> None:
        self.data = json.loads(json.dumps(data))
        self.saves += 1

    def remove(self) -> None:
        self.data = {}
