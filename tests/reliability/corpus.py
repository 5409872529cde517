"""Checked-in corpora (tests/reliability/corpus/): one input per line, bytes as Python escapes, `#` comments."""

from __future__ import annotations

import codecs
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"


def load_lines(name: str) -> list[bytes]:
    out = []
    for line in (CORPUS / name).read_text(encoding="ascii").splitlines():
        if line and not line.startswith("# "):
            out.append(codecs.escape_decode(line.encode("ascii"))[0])
    return out


def load_files(directory: str) -> list[tuple[str, bytes]]:
    """(name, content) of every file in corpus/DIRECTORY, sorted by name."""
    return [(p.name, p.read_bytes()) for p in sorted((CORPUS / directory).iterdir()) if p.is_file()]
