"""Precedence configuration: which system is authoritative for which data, in which phase.

    precedence:
      entities:
        customer:
          capability: customer-profile          # optional: the capability that serves this entity
          groups:
            address: {fields: [/street, /city, /zip], authority: {follow: customer-profile},
                      conflict: authority-wins}
            contact: {fields: [/email], authority: legacy, conflict: report}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from strangler.model import ConfigModel


class FollowCapability(ConfigModel):
    follow: str = Field(description="the side that serves this capability in its current mode is authoritative")


Authority = Literal["legacy", "new"] | FollowCapability
Conflict = Literal["report", "authority-wins", "latest-effective-time", "reject"]


class FieldGroup(ConfigModel):
    fields: list[str] = Field(min_length=1, description="JSON Pointer patterns (`*` = one segment) or field names")
    authority: Authority
    conflict: Conflict = "report"

    @field_validator("fields")
    @classmethod
    def _pointers(cls, value: list[str]) -> list[str]:
        return [v if v.startswith("/") else "/" + v for v in value]


class EntityRule(ConfigModel):
    capability: str | None = None
    groups: dict[str, FieldGroup] = Field(min_length=1)


class PrecedenceConfig(ConfigModel):
    entities: dict[str, EntityRule] = Field(default_factory=dict)
