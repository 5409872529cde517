"""The whole configuration: one YAML file, `${ENV}` interpolated, validated once at start-up.

Each package owns the sub-model it consumes; this module composes them, checks the references between
them (upstream names, overlapping routes) and turns every problem into a `ConfigError` that names the
file, the key path and the line.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from strangler.cdc.config import CdcConfig
from strangler.errors import ConfigError
from strangler.gateway.config import GatewayConfigMixin
from strangler.maturity.config import MaturityConfig
from strangler.precedence.config import FollowCapability, PrecedenceConfig
from strangler.precedence.coverage import uncovered_fields
from strangler.precedence.rules import PrecedenceRules
from strangler.reconcile.config import ReconcileConfig
from strangler.routing.config import CapabilityConfig, FlagsConfig
from strangler.routing.routes import OverlapIndex, parse_route
from strangler.shadow.config import DivergenceStoreConfig, OutcomesConfig

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
# A configuration is small; these stop a hostile or broken file (an alias bomb, a deep nesting) early.
_MAX_VALUES = 100_000
_MAX_DEPTH = 64


class StranglerConfig(GatewayConfigMixin):
    store: str = "sqlite:///strangler.db"
    flags: FlagsConfig = FlagsConfig()
    capabilities: dict[str, CapabilityConfig] = Field(default_factory=dict)
    divergence_store: DivergenceStoreConfig = DivergenceStoreConfig()
    precedence: PrecedenceConfig = PrecedenceConfig()
    maturity: MaturityConfig = MaturityConfig()
    outcomes: OutcomesConfig = OutcomesConfig()
    reconcile: ReconcileConfig = ReconcileConfig()
    cdc: CdcConfig | None = None

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
        for entity, rule in self.precedence.entities.items():
            if rule.capability is not None and rule.capability not in self.capabilities:
                raise _KeyProblem(("precedence", "entities", entity, "capability"),
                                  f"unknown capability {rule.capability!r}")
            for group_name, group in rule.groups.items():
                if isinstance(group.authority, FollowCapability) and group.authority.follow not in self.capabilities:
                    raise _KeyProblem(("precedence", "entities", entity, "groups", group_name, "authority", "follow"),
                                      f"unknown capability {group.authority.follow!r}")
        for aggregate, cap_name in self.outcomes.capabilities.items():
            if cap_name not in self.capabilities:
                raise _KeyProblem(("outcomes", "capabilities", aggregate), f"unknown capability {cap_name!r}")
        events = self.cdc.domain_events if self.cdc is not None else None
        gaps = uncovered_fields(events, self.precedence, self.outcomes.compare.ignore) if events is not None else []
        if gaps:  # the outcome comparison would compare these fields with nobody authoritative for them
            gap = gaps[0]
            raise _KeyProblem(("precedence", "entities", gap.entity, *(() if gap.no_rule else ("groups",))),
                              gap.message("cdc.domain_events.rules"))
        rules = PrecedenceRules(self.precedence)
        for job_name, job in self.reconcile.jobs.items():
            if job.no_authority == "error":
                uncovered = rules.uncovered(job.entity, ["/" + f for f in job.fields])
                if uncovered:
                    why = "has no precedence rule for" if rules.entity(job.entity) is None else "has no authority for"
                    raise _KeyProblem(("reconcile", "jobs", job_name, "fields"),
                                      f"entity {job.entity!r} {why} the compared fields {', '.join(uncovered)} "
                                      f"(add precedence.entities.{job.entity}.groups, or no_authority: report)")
        seen = OverlapIndex()
        for cap_name, cap in self.capabilities.items():
            for i, text in enumerate(cap.routes):
                template = parse_route(text)
                # within one capability an overlap is harmless: either template routes to it
                other = seen.first_overlap(cap_name, template)
                if other is not None:
                    raise _KeyProblem(
                        ("capabilities", cap_name, "routes", i),
                        f"route {text!r} overlaps {other.template.text!r} "
                        f"(capabilities.{other.capability}.routes[{other.index}])",
                    )
                seen.add(cap_name, i, template)
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
    except yaml.reader.ReaderError as exc:
        problem = f"not valid YAML: character #x{exc.character:04x} is not allowed"
        raise ConfigError(source, [("", problem, text.count("\n", 0, exc.position) + 1)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
        problem = " ".join(p for p in parts if p) or str(exc)
        raise ConfigError(source, [("", f"not valid YAML: {problem}", line)]) from None
    except RecursionError:
        raise ConfigError(source, [("", "not valid YAML here: nested too deeply", None)]) from None
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null") and not node.value):
        raise ConfigError(source, [("", "the file is empty; expected a mapping of keys (see deploy/examples)", 1)])
    builder = _Builder(env)
    try:
        data = builder.construct(node, ())
    except _TooLarge as exc:
        raise ConfigError(source, [*builder.problems, (exc.path, exc.message, exc.line)]) from None
    if builder.problems:
        raise ConfigError(source, builder.problems)
    if not isinstance(data, dict):
        raise ConfigError(source, [("", "expected a mapping of keys at the top level", node.start_mark.line + 1)])
    try:
        return StranglerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc, builder.lines)) from None


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
            message = _message(err, loc)
        problems.append((format_path(loc), message, _line_for(loc, lines)))
    return problems


def _message(err: Any, loc: tuple[str | int, ...]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind in ("enum", "literal_error"):
        return f"{msg}, got {err.get('input')!r}"
    return msg


def _unknown_key(loc: tuple[str | int, ...]) -> str:
    message = "unknown key (check the spelling; unknown keys are not ignored)"
    model = _model_at(loc[:-1]) if loc else None
    if model is None:
        return message
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; expected one of {', '.join(known)}"


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The configuration model that the mapping at `loc` is validated against, if there is one."""
    current: Any = StranglerConfig
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


class _TooLarge(Exception):
    def __init__(self, path: str, message: str, line: int) -> None:
        self.path, self.message, self.line = path, message, line


class _Builder:
    """Turns a composed YAML node into plain data, recording each key path's line and every problem.

    Like PyYAML's safe loader, with the checks a configuration needs: duplicate keys are errors, `${VAR}`
    is interpolated in string values only (never in the YAML text, so a variable cannot change the
    structure), merge keys (`<<: *anchor`) are applied, and recursive or exploding aliases are refused.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.lines: dict[tuple[str | int, ...], int] = {}
        self.problems: list[tuple[str, str, int | None]] = []
        self._values = 0
        self._active: set[int] = set()  # the nodes being constructed: an alias back to one is a cycle
        self._loader = yaml.SafeLoader("")  # constructs scalars only (ints, floats, bools, timestamps, ...)

    def construct(self, node: yaml.Node, loc: tuple[str | int, ...]) -> Any:
        line = node.start_mark.line + 1
        self._values += 1
        if self._values > _MAX_VALUES:
            raise _TooLarge(format_path(loc), f"more than {_MAX_VALUES} values (do aliases expand too much?)", line)
        if len(loc) > _MAX_DEPTH:
            raise _TooLarge(format_path(loc), f"nested more than {_MAX_DEPTH} levels deep", line)
        if id(node) in self._active:
            self.problems.append((format_path(loc), "an alias refers to a node that contains it", line))
            return None
        self.lines.setdefault(loc, line)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, loc)
        if node.tag not in _COLLECTION_TAGS:
            self.problems.append((format_path(loc), f"the tag {node.tag!r} is not supported here", line))
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.construct(item, (*loc, i)) for i, item in enumerate(node.value)]
            return self._mapping(node, loc)
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.Node, loc: tuple[str | int, ...]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:  # merged keys first: the mapping's own keys override them
            if key_node.tag != _MERGE_TAG:
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in reversed(sources):  # earlier sources win
                value = self.construct(source, loc)
                if not isinstance(value, dict):
                    self.problems.append((format_path(loc), "'<<' merges only mappings", key_node.start_mark.line + 1))
                    continue
                merged.update(value)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append((format_path(loc), "keys must be plain strings", line))
                continue
            key = key_node.value
            if key in out:
                self.problems.append(
                    (format_path((*loc, key)), "duplicate key (the earlier value would be silently lost)", line)
                )
                continue
            self.lines[(*loc, key)] = line  # errors about a key point at the key, not at its value
            out[key] = self.construct(value_node, (*loc, key))
        return {**merged, **out}

    def _scalar(self, node: yaml.ScalarNode, loc: tuple[str | int, ...]) -> Any:
        line = node.start_mark.line + 1
        try:
            value = self._loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            self._loader.recursive_objects.clear()
            problem = getattr(exc, "problem", None) or str(exc)
            self.problems.append((format_path(loc), f"cannot read the value {node.value!r} ({node.tag}): {problem}",
                                  line))
            return None
        if isinstance(value, str) and "${" in value:
            return self._interpolate(value, loc, line)
        return value

    def _interpolate(self, value: str, loc: tuple[str | int, ...], line: int) -> str:
        def replace(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            current = self.env.get(name)
            if current is not None and (current or default is None):
                return current
            if default is not None:  # as in the shell, `${VAR:-default}` also replaces an empty VAR
                return default
            self.problems.append((format_path(loc), f"environment variable {name} is not set", line))
            return ""

        return _ENV.sub(replace, value)
