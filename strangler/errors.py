"""The root of Strangler's error tree.

    StranglerError
    ├── ConfigError            an invalid configuration file (exit 2)
    └── (each package's own errors.py adds its branch)
"""

from __future__ import annotations


class StranglerError(Exception):
    """Base of every error Strangler raises on purpose."""


class ConfigError(StranglerError):
    """A configuration that cannot be used: names the file, the key path and what was expected."""

    def __init__(self, source: str, problems: list[tuple[str, str, int | None]]) -> None:
        self.source = source
        self.problems = problems
        lines = []
        for path, message, line in problems:
            where = f"{source}:{line}" if line else source
            lines.append(f"{where}: {path or '<root>'}: {message}")
        super().__init__("\n".join(lines))
