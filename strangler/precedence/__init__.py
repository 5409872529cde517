"""Explicit source-of-authority rules per entity and field group, and conflict resolution."""

from __future__ import annotations

from strangler.precedence.config import EntityRule, FieldGroup, PrecedenceConfig
from strangler.precedence.rules import PrecedenceRules, Resolution, Versioned, authority_of, resolve, serving_side

__all__ = [
    "EntityRule", "FieldGroup", "PrecedenceConfig", "PrecedenceRules", "Resolution", "Versioned", "authority_of",
    "resolve", "serving_side",
]
