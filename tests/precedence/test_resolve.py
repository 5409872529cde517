"""Truth tables of conflict resolution: every strategy, both authorities, and `follow` across the modes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from strangler.precedence import FieldGroup, Versioned, authority_of, resolve
from strangler.routing.modes import Mode

EARLY = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
LATE = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
MODES = {"profile": Mode.SHADOW}


def group(authority: Any, conflict: str) -> FieldGroup:
    return FieldGroup.model_validate({"fields": ["/street"], "authority": authority, "conflict": conflict})


@pytest.mark.parametrize(("authority", "conflict", "winner", "classification"), [
    ("legacy", "report", None, "conflict"),
    ("new", "report", None, "conflict"),
    ("legacy", "authority-wins", "legacy", "regression"),
    ("new", "authority-wins", "new", "regression"),
    ("legacy", "reject", None, "rejected"),
    ("new", "reject", None, "rejected"),
])
def test_differing_values_by_strategy_and_authority(
    authority: str, conflict: str, winner: str | None, classification: str
) -> None:
    r = resolve(group(authority, conflict), Versioned("1 Main St", LATE), Versioned("2 Elm St", EARLY), MODES)
    assert (r.winner, r.classification, r.authority) == (winner, classification, authority)
    assert authority in r.explanation


@pytest.mark.parametrize("conflict", ["report", "authority-wins", "latest-effective-time", "reject"])
@pytest.mark.parametrize("authority", ["legacy", "new"])
def test_equal_values_match_under_every_strategy(conflict: str, authority: str) -> None:
    r = resolve(group(authority, conflict), Versioned("x", EARLY), Versioned("x", None), MODES)
    assert (r.winner, r.classification, r.authority) == (authority, "match", authority)


@pytest.mark.parametrize(("authority", "legacy_time", "new_time", "winner", "classification", "says"), [
    ("legacy", LATE, EARLY, "legacy", "superseded", "legacy has the later effective time"),
    ("legacy", EARLY, LATE, "new", "superseded", "new has the later effective time"),
    ("new", LATE, EARLY, "legacy", "superseded", "legacy has the later effective time"),
    ("new", EARLY, LATE, "new", "superseded", "new has the later effective time"),
    ("legacy", LATE, LATE, "legacy", "conflict", "equal effective times; the authority (legacy)"),
    ("new", LATE, LATE, "new", "conflict", "equal effective times; the authority (new)"),
    ("legacy", None, LATE, None, "conflict", "legacy has none"),
    ("new", LATE, None, None, "conflict", "new has none"),
    ("legacy", None, None, None, "conflict", "legacy and new has none"),
])
def test_latest_effective_time(
    authority: str, legacy_time: dt.datetime | None, new_time: dt.datetime | None, winner: str | None,
    classification: str, says: str,
) -> None:
    r = resolve(group(authority, "latest-effective-time"), Versioned(1, legacy_time), Versioned(2, new_time), MODES)
    assert (r.winner, r.classification, r.authority) == (winner, classification, authority)
    assert says in r.explanation


def test_latest_effective_time_is_never_last_write_wins_by_arrival() -> None:
    """Without business times nothing wins, however the events arrived."""
    r = resolve(group("new", "latest-effective-time"), Versioned(1), Versioned(2), MODES)
    assert r.winner is None


@pytest.mark.parametrize(("mode", "authority"), [
    (Mode.LEGACY, "legacy"),
    (Mode.SHADOW, "legacy"),
    (Mode.CANARY, "legacy"),
    (Mode.NEW, "new"),
    (Mode.NEW_ONLY, "new"),
])
@pytest.mark.parametrize(("conflict", "winner_is_authority", "classification"), [
    ("authority-wins", True, "regression"),
    ("report", False, "conflict"),
    ("reject", False, "rejected"),
])
def test_follow_takes_the_serving_side_of_the_capability(
    mode: Mode, authority: str, conflict: str, winner_is_authority: bool, classification: str
) -> None:
    g = group({"follow": "profile"}, conflict)
    assert authority_of(g, {"profile": mode}) == authority
    r = resolve(g, Versioned("a"), Versioned("b"), {"profile": mode})
    assert r.authority == authority and r.classification == classification
    assert r.winner == (authority if winner_is_authority else None)


def test_follow_of_a_capability_with_no_known_mode_is_unknown_authority() -> None:
    r = resolve(group({"follow": "elsewhere"}, "authority-wins"), Versioned("a"), Versioned("b"), MODES)
    assert (r.winner, r.classification, r.authority) == (None, "unknown-authority", None)
    assert "'elsewhere'" in r.explanation


def test_no_rule_is_unknown_authority_never_a_winner() -> None:
    assert resolve(None, Versioned("a", LATE), Versioned("b", EARLY), MODES).classification == "unknown-authority"
    assert resolve(None, Versioned("a", LATE), Versioned("b", EARLY), MODES).winner is None
    assert resolve(None, Versioned("a"), Versioned("a"), MODES).classification == "match"
