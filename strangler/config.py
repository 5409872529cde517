"""The whole configuration: one YAML file, `${ENV}` interpolated, validated once at start-up.

Each package owns the sub-model it consumes; this module composes them, checks the references between
them (upstream names, overlapping routes) and turns every problem into a `ConfigError` that names the
file, the key path and the line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from strangler.errors import ConfigError
from strangler.gateway.config import GatewayConfigMixin
from strangler.routing.config import CapabilityConfig, FlagsConfig
from strangler.routing.routes import parse_route, templates_overlap

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class StranglerConfig(GatewayConfigMixin):
    store: str = "sqlite:///strangler.db"
    flags: FlagsConfig = FlagsConfig()
    capabilities: dict[str, CapabilityConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> StranglerConfig:
        names = set(self.upstreams)
        if self.default_upstream is not None and self.default_upstream not in names:
            raise _KeyProblem(("default_upstream",), f"unknown upstream {self.default_upstream!r}")
        for cap_name, cap in self.capabilities.items():
            for side in ("legacy", "new"):
                ref = getattr(cap, side)
                if ref is not None and ref not in names:
                    known = ", ".join(sorted(names)) or "none defined"
                    raise _KeyProblem(("capabilities", cap_name, side), f"unknown upstream {ref!r} ({known})")
            if cap.shadow.secondary is not None and cap.shadow.secondary not in names:
                raise _KeyProblem(
                    ("capabilities", cap_name, "shadow", "secondary"), f"unknown upstream {cap.shadow.secondary!r}"
                )
        seen: list[tuple[str, int, Any]] = []
        for cap_name, cap in self.capabilities.items():
            for i, text in enumerate(cap.routes):
                template = parse_route(text)
                for other_cap, other_i, other in seen:
                    if templates_overlap(template, other):
                        raise _KeyProblem(
                            ("capabilities", cap_name, "routes", i),
                            f"route {text!r} overlaps {other.text!r} "
                            f"(capabilities.{other_cap}.routes[{other_i}])",
                        )
                seen.append((cap_name, i, template))
        return self


class _KeyProblem(ValueError):
    """A cross-reference problem at a known key path (raised inside validation, reported by load)."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def format_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> StranglerConfig:
    """Read, interpolate and validate a configuration file; raise ConfigError on any problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read the file: {exc.strerror or exc}", None)]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, [("", "the file is not UTF-8 text", None)]) from None
    return load_config_text(text, source=source, env=env)


def load_config_text(text: str, source: str = "<config>", env: Mapping[str, str] | None = None) -> StranglerConfig:
    env = os.environ if env is None else env
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [("", f"not valid YAML: {problem}", line)]) from None
    if node is None:
        data: Any = {}
        lines: dict[tuple[str | int, ...], int] = {}
    else:
        problems: list[tuple[str, str, int | None]] = []
        lines = {}
        data = _construct(node, (), lines, problems, env)
        if problems:
            raise ConfigError(source, problems)
    if not isinstance(data, dict):
        raise ConfigError(source, [("", "expected a mapping of keys at the top level", 1)])
    try:
        return StranglerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc, lines)) from None


def _line_for(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


def _problems(exc: ValidationError, lines: dict[tuple[str | int, ...], int]) -> list[tuple[str, str, int | None]]:
    problems = []
    for err in exc.errors(include_url=False):
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _KeyProblem):
            loc = ctx_error.loc
            message = ctx_error.message
        else:
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            message = _message(err)
        problems.append((format_path(loc), message, _line_for(loc, lines)))
    return problems


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; unknown keys are not ignored)"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind in ("enum", "literal_error"):
        return f"{msg}, got {err.get('input')!r}"
    return msg


def _construct(
    node: yaml.Node,
    loc: tuple[str | int, ...],
    lines: dict[tuple[str | int, ...], int],
    problems: list[tuple[str, str, int | None]],
    env: Mapping[str, str],
) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append((format_path(loc), "keys must be plain strings", key_node.start_mark.line + 1))
                continue
            key = key_node.value
            if key in out:
                problems.append(
                    (format_path((*loc, key)), "duplicate key (the earlier value would be silently lost)",
                     key_node.start_mark.line + 1)
                )
                continue
            out[key] = _construct(value_node, (*loc, key), lines, problems, env)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*loc, i), lines, problems, env) for i, item in enumerate(node.value)]
    value = _scalar(node)
    if isinstance(value, str) and "${" in value:
        return _interpolate(value, loc, node.start_mark.line + 1, problems, env)
    return value


def _scalar(node: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _interpolate(
    value: str,
    loc: tuple[str | int, ...],
    line: int,
    problems: list[tuple[str, str, int | None]],
    env: Mapping[str, str],
) -> str:
    def replace(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append((format_path(loc), f"environment variable {name} is not set", line))
        return ""

    return _ENV.sub(replace, value)
